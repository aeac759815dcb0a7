package bufpool

import "testing"

func TestClasses(t *testing.T) {
	prev := 0
	for n := 1; n <= 1<<22; n += 1 + n/97 {
		c, size := class(n)
		if size < n {
			t.Fatalf("class(%d) has capacity %d", n, size)
		}
		if n > minSize && size > n+n/4+1 {
			t.Fatalf("class(%d) wastes %d bytes", n, size-n)
		}
		if c < prev {
			t.Fatalf("classes not monotonic at %d", n)
		}
		prev = c
		if c2, s2 := class(size); c2 != c || s2 != size {
			t.Fatalf("capacity %d of class %d maps to class %d (%d)", size, c, c2, s2)
		}
	}
}

func TestGetPut(t *testing.T) {
	b := Get(300 << 10)
	if len(b) != 300<<10 {
		t.Fatalf("len %d", len(b))
	}
	Put(b)
	Put(make([]byte, 5000)) // not a class size: ignored
	c := Get(290 << 10)
	if len(c) != 290<<10 || cap(c) < len(c) {
		t.Fatalf("len %d cap %d", len(c), cap(c))
	}
}
