package s3store_test

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"testing"

	"github.com/sealkv/kv"
	"github.com/sealkv/kv/s3store"
)

// BenchmarkKV measures Put and Get of SEALKV_BENCH_MB MiB (default 256) of
// incompressible data through sealkv with 4+2 shards and the default slice
// sizes, on three slice stores: the default local Pebble, s3store over
// three in-process gofakes3 servers (the S3 client path, memory behind
// it), and s3store over a SeaweedFS cluster on 127.0.0.1 (three buckets on
// three volume servers; only with SEALKV_SEAWEEDFS=1). Everything shares
// the machine's cores with the servers. Run:
//
//	SEALKV_SEAWEEDFS=1 go test -run '^$' -bench KV -benchtime 3x -timeout 60m ./s3store
func BenchmarkKV(b *testing.B) {
	mb := 256
	if v, err := strconv.Atoi(os.Getenv("SEALKV_BENCH_MB")); err == nil && v > 0 {
		mb = v
	}
	size := int64(mb) << 20
	backends := []struct {
		name  string
		store func(b *testing.B) kv.SliceStore // nil store: the default
	}{
		{"pebble", func(*testing.B) kv.SliceStore { return nil }},
		{"s3-gofakes3", func(b *testing.B) kv.SliceStore {
			c := newCluster(b, 3)
			return c.open(c.config())
		}},
		{"s3-seaweedfs", func(b *testing.B) kv.SliceStore {
			if os.Getenv(seaweedEnv) == "" {
				b.Skipf("set %s=1", seaweedEnv)
			}
			sw := startSeaweed(b)
			return sw.open(b)
		}},
	}
	for _, be := range backends {
		b.Run(be.name, func(b *testing.B) {
			store := be.store(b)
			keys := genKeys(b)
			opts := &kv.Options{Keys: keys, DataShards: testK, ParityShards: testM, Logger: slog.New(slog.DiscardHandler)}
			if store != nil {
				opts.SliceStore = store
			}
			db, err := kv.Open(b.TempDir(), opts)
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			seed := uint64(0)
			b.Run(fmt.Sprintf("put-%dMiB", mb), func(b *testing.B) {
				b.SetBytes(size)
				for b.Loop() {
					seed++
					if _, err := db.Put(bg, fmt.Sprintf("put-%d", seed), randReader(seed, size)); err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
				if st, ok := store.(*s3store.Store); ok {
					b.ReportMetric(float64(st.Stats().Retries), "retries")
				}
			})
			if _, err := db.Put(bg, "get", randReader(1<<40, size)); err != nil {
				b.Fatal(err)
			}
			b.Run(fmt.Sprintf("get-%dMiB", mb), func(b *testing.B) {
				b.SetBytes(size)
				for b.Loop() {
					r, err := db.Get(bg, "get")
					if err != nil {
						b.Fatal(err)
					}
					n, err := io.Copy(io.Discard, r)
					if err != nil || n != size {
						b.Fatalf("read %d bytes: %v", n, err)
					}
				}
			})
		})
	}
}
