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

func TestLarge(t *testing.T) {
	b := Get(300 << 10)
	if len(b) != 300<<10 || cap(b) != 512<<10 {
		t.Fatalf("len %d cap %d", len(b), cap(b))
	}
	for i := range b {
		b[i] = byte(i)
	}
	Put(b[:10]) // any length, same start
	c := Get(400 << 10)
	if &c[0] != &b[0] {
		t.Fatal("a returned large buffer was not reused")
	}
	// A buffer bufpool did not hand out, and a second Put of the same
	// buffer, are ignored: neither may come back from Get.
	foreign := make([]byte, 512<<10)
	Put(foreign)
	Put(c)
	Put(c)
	d, e := Get(512<<10), Get(512<<10)
	if &d[0] == &e[0] || &d[0] == &foreign[0] || &e[0] == &foreign[0] {
		t.Fatal("a foreign or twice-returned buffer was handed out")
	}
	Put(d)
	Put(e)
}

func TestLargeFreeListBounded(t *testing.T) {
	var bufs [][]byte
	for range 2 * maxFree / (1 << 20) {
		bufs = append(bufs, Get(1<<20))
	}
	for _, b := range bufs {
		Put(b)
	}
	large.mu.Lock()
	defer large.mu.Unlock()
	if large.bytes > maxFree {
		t.Fatalf("free list holds %d bytes, bound %d", large.bytes, maxFree)
	}
}

func TestOutstanding(t *testing.T) {
	before := Outstanding()
	a, b := Get(LargeSize), Get(1<<20)
	small := Get(LargeSize / 2)
	if n := Outstanding() - before; n != 2 {
		t.Fatalf("%d large buffers outstanding after two Gets, want 2 (small ones are not counted)", n)
	}
	Put(a)
	Put(a) // a second Put is ignored
	Put(small)
	if n := Outstanding() - before; n != 1 {
		t.Fatalf("%d outstanding after returning one, want 1", n)
	}
	Put(b)
	if n := Outstanding() - before; n != 0 {
		t.Fatalf("%d outstanding after returning both, want 0", n)
	}
}
