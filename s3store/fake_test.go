package s3store_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/sealkv/kv/s3store"
)

// fakeDomain is an in-process S3 server (gofakes3, in memory) on a fixed
// loopback address that can be stopped (connections refused), restarted
// with its data, or wiped (a replaced disk).
type fakeDomain struct {
	t       testing.TB
	addr    string
	backend *s3mem.Backend
	mu      sync.Mutex
	srv     *http.Server
	// hook, if set, sees every request first; returning true means it
	// answered.
	hook atomic.Pointer[func(w http.ResponseWriter, r *http.Request) bool]
}

func newFakeDomain(t testing.TB) *fakeDomain {
	t.Helper()
	f := &fakeDomain{t: t, backend: s3mem.New()}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.addr = ln.Addr().String()
	f.serve(ln)
	t.Cleanup(f.stop)
	return f
}

func (f *fakeDomain) serve(ln net.Listener) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fake := gofakes3.New(f.backend, gofakes3.WithLogger(gofakes3.DiscardLog()), gofakes3.WithoutVersioning())
	h := fake.Server()
	f.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hp := f.hook.Load(); hp != nil && (*hp)(w, r) {
			return
		}
		h.ServeHTTP(w, r)
	})}
	go f.srv.Serve(ln)
}

// stop closes the listener and every connection: the domain is down.
func (f *fakeDomain) stop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.srv != nil {
		f.srv.Close()
		f.srv = nil
	}
}

// start brings a stopped domain back on its address.
func (f *fakeDomain) start() {
	f.t.Helper()
	var ln net.Listener
	var err error
	for range 50 {
		if ln, err = net.Listen("tcp", f.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		f.t.Fatalf("restarting %s: %v", f.addr, err)
	}
	f.serve(ln)
}

// wipe replaces the domain's storage by an empty one (bucket included).
func (f *fakeDomain) wipe() {
	f.stop()
	f.backend = s3mem.New()
	f.start()
}

func (f *fakeDomain) setHook(h func(w http.ResponseWriter, r *http.Request) bool) {
	if h == nil {
		f.hook.Store(nil)
		return
	}
	f.hook.Store(&h)
}

// objects lists the keys in the domain's bucket, markers excluded.
func (f *fakeDomain) objects(bucket string) []string {
	f.t.Helper()
	l, err := f.backend.ListBucket(bucket, &gofakes3.Prefix{}, gofakes3.ListBucketPage{})
	if err != nil {
		f.t.Fatalf("listing %s: %v", f.addr, err)
	}
	var keys []string
	for _, c := range l.Contents {
		if !strings.HasSuffix(c.Key, "sealkv-domain") {
			keys = append(keys, c.Key)
		}
	}
	return keys
}

// cluster is a set of fake domains.
type cluster struct {
	t       testing.TB
	domains []*fakeDomain
}

func newCluster(t testing.TB, n int) *cluster {
	c := &cluster{t: t}
	for range n {
		c.domains = append(c.domains, newFakeDomain(t))
	}
	return c
}

func (c *cluster) config() s3store.Config {
	cfg := s3store.Config{
		Logger: slog.New(slog.DiscardHandler),
		Retry:  s3store.Retry{Attempts: 3, Backoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, AttemptTimeout: 10 * time.Second, Cooldown: 200 * time.Millisecond},
	}
	for i, d := range c.domains {
		cfg.Domains = append(cfg.Domains, s3store.Domain{Endpoint: d.addr, Bucket: fmt.Sprintf("shards-%d", i), AccessKey: "test", SecretKey: "test"})
	}
	return cfg
}

func (c *cluster) open(cfg s3store.Config) *s3store.Store {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := s3store.New(ctx, cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	return s
}

// objects counts the objects (shards and headers) in every domain.
func (c *cluster) objects() int {
	n := 0
	for i, d := range c.domains {
		n += len(d.objects(fmt.Sprintf("shards-%d", i)))
	}
	return n
}

// flaky wraps a transport and makes requests fail: the first failFirst
// requests, then every failEvery-th one (0: never).
type flaky struct {
	next      http.RoundTripper
	failFirst int64
	failEvery atomic.Int64
	n, failed atomic.Int64
	mode      string // "error" (transport error), "503", "truncate" (GET body cut short)
}

func (f *flaky) RoundTrip(r *http.Request) (*http.Response, error) {
	n := f.n.Add(1)
	every := f.failEvery.Load()
	fail := n <= f.failFirst || (every > 0 && n%every == 0)
	if !fail {
		return f.next.RoundTrip(r)
	}
	f.failed.Add(1)
	switch f.mode {
	case "503":
		if r.Body != nil {
			io.Copy(io.Discard, r.Body)
			r.Body.Close()
		}
		body := `<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>flaky</Message></Error>`
		return &http.Response{StatusCode: http.StatusServiceUnavailable, Status: "503 Service Unavailable", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			Header: http.Header{"Content-Type": {"application/xml"}}, Body: io.NopCloser(strings.NewReader(body)), ContentLength: int64(len(body)), Request: r}, nil
	case "truncate":
		resp, err := f.next.RoundTrip(r)
		if err != nil || r.Method != http.MethodGet || resp.StatusCode != http.StatusOK || resp.ContentLength < 2 {
			return resp, err
		}
		resp.Body = &cut{rc: resp.Body, left: resp.ContentLength / 2}
		return resp, nil
	default:
		if r.Body != nil {
			r.Body.Close()
		}
		return nil, errors.New("flaky: connection reset by test")
	}
}

// cut returns the first left bytes of rc, then an unexpected EOF.
type cut struct {
	rc   io.ReadCloser
	left int64
}

func (c *cut) Read(p []byte) (int, error) {
	if c.left <= 0 {
		return 0, io.ErrUnexpectedEOF
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.rc.Read(p)
	c.left -= int64(n)
	return n, err
}

func (c *cut) Close() error { return c.rc.Close() }
