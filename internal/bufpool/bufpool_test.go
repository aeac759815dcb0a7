package bufpool

import "testing"

func TestClasses(t *testing.T) {
	for n := 1; n <= 1<<22; n += 1 + n/97 {
		c := class(n)
		if 1<<c < n || (n > minSize && 1<<(c-1) >= n) {
			t.Fatalf("class(%d) = %d", n, c)
		}
	}
}

func TestGetPut(t *testing.T) {
	b := Get(300 << 10)
	if len(b) != 300<<10 || cap(b) != 512<<10 {
		t.Fatalf("len %d cap %d", len(b), cap(b))
	}
	Put(b)
	Put(make([]byte, 5000)) // not a class size: ignored
	if c := Get(290 << 10); len(c) != 290<<10 || cap(c) != 512<<10 {
		t.Fatalf("len %d cap %d", len(c), cap(c))
	}
}
