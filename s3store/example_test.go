package s3store_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http/httptest"
	"os"
	"strings"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/sealkv/kv"
	"github.com/sealkv/kv/s3store"
)

func ExampleNew() {
	// Three failure domains, say three S3 endpoints in three sites. Here
	// they are in-process fakes; see newExampleDomains.
	endpoints, stop := newExampleDomains(3)
	defer stop()

	ctx := context.Background()
	var cfg s3store.Config
	for i, ep := range endpoints {
		cfg.Domains = append(cfg.Domains, s3store.Domain{
			Endpoint:  ep, // "s3.site-a.example.net"
			Bucket:    fmt.Sprintf("sealkv-shards-%d", i),
			AccessKey: "ACCESS", SecretKey: "SECRET",
			// Secure: true, Region: "eu-central-1",
		})
	}
	store, err := s3store.New(ctx, cfg)
	if err != nil {
		panic(err)
	}
	keys, _ := kv.GenerateKeys()
	dir, _ := os.MkdirTemp("", "sealkv-example")
	defer os.RemoveAll(dir)
	// 2 data + 1 parity shards over 3 domains: any one domain may be lost.
	db, err := kv.Open(dir, &kv.Options{Keys: keys, SliceStore: store, DataShards: 2, ParityShards: 1})
	if err != nil {
		panic(err)
	}
	defer db.Close() // closes the store too
	if _, err := db.Put(ctx, "greeting", bytes.NewReader([]byte("hello, object store"))); err != nil {
		panic(err)
	}
	r, _ := db.Get(ctx, "greeting")
	defer r.Close()
	b, _ := io.ReadAll(r)
	fmt.Println(string(b), "| domains lost without loss:", s3store.Tolerates(store.Domains(), 2, 1))
	// Output: hello, object store | domains lost without loss: 1
}

// newExampleDomains starts n in-memory S3 servers and returns their
// host:port.
func newExampleDomains(n int) ([]string, func()) {
	var eps []string
	var srvs []*httptest.Server
	for range n {
		f := gofakes3.New(s3mem.New(), gofakes3.WithLogger(gofakes3.DiscardLog()))
		srv := httptest.NewServer(f.Server())
		srvs = append(srvs, srv)
		eps = append(eps, strings.TrimPrefix(srv.URL, "http://"))
	}
	return eps, func() {
		for _, s := range srvs {
			s.Close()
		}
	}
}
