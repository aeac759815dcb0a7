// Package s3store is a kv.SliceStore on S3-compatible object stores
// (Amazon S3, MinIO, SeaweedFS, Ceph RGW, Garage, ...): the slice keyspace
// of a sealkv DB spread over several failure domains, while the meta
// keyspace stays in the DB's local Pebble instance.
//
// Every shard is one object. The k+m shards of a slice are spread over the
// configured domains: shard i of the slice at location l goes to domain
// (r(l)+i) mod len(Domains), where r(l) rotates with the location so that
// reads (which fetch the k data shards first) and writes load every domain
// evenly. A slice survives the loss of Tolerates(len(Domains), k, m) whole
// domains; with one domain per shard that is m.
//
// Object keys (Prefix is Config.Prefix):
//
//	Prefix + "s/" + session(32 hex) + "/" + counter(16 hex) + "." + shard index(2 hex)
//	Prefix + "h/" + session(32 hex) + "/" + counter(16 hex) + "." + SliceID(128 hex)
//	Prefix + "sealkv-domain"   (the domain's index in the layout)
//
// The second form is a slice's header: an empty object whose name carries
// the SliceID, kept in HeaderCopies domains and written before the shards,
// so that listing a session's headers implements Headers (crash recovery)
// without reading any object. Keys sort by location, so one listing per
// domain yields a session's slices in order.
//
// Requests are retried with exponential backoff and jitter (Config.Retry),
// each attempt bounded by a timeout and every call by its context; a
// semaphore bounds the requests in flight across the Store. A domain that
// stops accepting connections is skipped for a cooldown so reads served
// from parity do not wait on it. Reads treat a missing or unreadable
// object as a missing shard (sealkv rebuilds it from parity and reports
// it), and a shard whose domain does not answer as one that may exist (Get
// says so with kv.ErrUnavailable). Nor does a read wait for a domain that
// hangs: once half the shards it asked for are in, the rest get
// Config.StragglerWait and are then treated as missing; and a domain whose
// shard reads keep failing gets one attempt per read, without retries,
// until a read succeeds.
//
// Writes use single-request PUTs of whole shards (no multipart upload, no
// streaming signature), with Content-MD5 unless disabled. An S3 PUT that
// returns success is durable, so a slice is durable once all its objects
// are acknowledged.
//
// Buckets should not have versioning enabled: a delete would then only add
// a delete marker and the space would never be freed.
package s3store

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"iter"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/sealkv/kv"
	"github.com/sealkv/kv/internal/chunker"
	"github.com/sealkv/kv/internal/erasure"
	"github.com/sealkv/kv/internal/seal"
)

// Errors.
var (
	// ErrClosed is returned by calls after Close.
	ErrClosed = errors.New("s3store: closed")
	// ErrLayout is returned by New when a bucket holds the marker of another
	// domain index or count: the Domains list was reordered, resized, or
	// names one bucket twice. Shards would be looked up in the wrong places.
	ErrLayout = errors.New("s3store: domain layout changed")
	// ErrDomainDown is returned (wrapped) for requests to a domain that is
	// in its cooldown after it stopped accepting connections.
	ErrDomainDown = errors.New("s3store: domain down")
)

var errNotFound = errors.New("s3store: no such object")

// errDamaged: an object larger than any shard can be (see maxObject). Its
// domain answered, so the shard is damaged, not unavailable: Get returns it
// as missing, for parity to cover and Scrub to rewrite.
var errDamaged = errors.New("s3store: object larger than any shard")

// missing reports whether a shard read found no usable object in a domain
// that answered: the object is absent or damaged.
func missing(err error) bool { return errors.Is(err, errNotFound) || errors.Is(err, errDamaged) }

// maxObject bounds the size of an object: the largest shard there can be,
// that of a slice of the largest Max, padded, sealed and not split (k = 1),
// with its checksum. Get refuses a larger object as damage, and a Writer
// or PutShard refuses to write one, so nothing written is unreadable.
var maxObject = int64(seal.PadmeLen(chunker.MaxMax+1) + seal.Overhead + erasure.ChecksumSize)

// Store is a kv.SliceStore on S3-compatible failure domains. It is safe for
// concurrent use.
type Store struct {
	cfg     Config
	domains []*domain
	sem     chan struct{}
	log     *slog.Logger
	own     *http.Transport // closed on Close when we made it
	closed  atomic.Bool

	requests, retries, failures, stragglers atomic.Int64
}

var _ kv.SliceStore = (*Store)(nil)

type domain struct {
	idx       int
	cfg       Domain
	client    *minio.Client
	core      minio.Core
	downUntil atomic.Int64 // unix nanoseconds
	// readFails counts consecutive shard reads that failed after all
	// attempts; see sickReads.
	readFails atomic.Int32
}

// sickReads: once this many shard reads in a row have failed on a domain
// (it answers, but with errors: e.g. a SeaweedFS volume server behind it is
// dead), its shard reads get one attempt, no retries, until one succeeds.
// Parity covers those shards, and each slice read no longer waits through
// the retry backoff.
const sickReads = 3

func (d *domain) String() string { return fmt.Sprintf("domain %d (%s)", d.idx, d.cfg) }

// New connects to the domains, creates missing buckets and checks (or, in
// empty buckets, records) each domain's place in the layout. ctx bounds
// these requests only.
func New(ctx context.Context, cfg Config) (*Store, error) {
	cfg, err := cfg.resolve()
	if err != nil {
		return nil, err
	}
	s := &Store{cfg: cfg, sem: make(chan struct{}, cfg.Concurrency), log: cfg.Logger}
	var tr http.RoundTripper = cfg.Transport
	if tr == nil {
		s.own = newTransport(cfg.Concurrency)
		tr = s.own
	}
	tr = fastFail{tr}
	for i, dc := range cfg.Domains {
		creds := credentials.NewStaticV4(dc.AccessKey, dc.SecretKey, "")
		if dc.AccessKey == "" && dc.SecretKey == "" {
			creds = credentials.New(&credentials.Static{Value: credentials.Value{SignerType: credentials.SignatureAnonymous}})
		}
		c, err := minio.New(dc.Endpoint, &minio.Options{
			Creds:      creds,
			Secure:     dc.Secure,
			Region:     dc.Region,
			Transport:  tr,
			MaxRetries: 1, // retries are ours: backoff, cooldown, accounting
		})
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("s3store: domain %d (%s): %w", i, dc, err)
		}
		s.domains = append(s.domains, &domain{idx: i, cfg: dc, client: c, core: minio.Core{Client: c}})
	}
	// One domain at a time, so a bucket listed twice is caught by its
	// second marker check.
	for _, d := range s.domains {
		if err := s.prepare(ctx, d); err != nil {
			s.Close()
			return nil, err
		}
	}
	return s, nil
}

func newTransport(conns int) *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = 4 * conns
	t.MaxIdleConnsPerHost = conns
	t.IdleConnTimeout = 90 * time.Second
	t.DialContext = (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	t.ResponseHeaderTimeout = 0 // the attempt timeout bounds it
	t.DisableCompression = true // shards are ciphertext
	return t
}

// markerKey holds the domain's place in the layout.
func (s *Store) markerKey() string { return s.cfg.Prefix + "sealkv-domain" }

func (s *Store) marker(d *domain) []byte {
	return fmt.Appendf(nil, "sealkv s3store v1\ndomain %d of %d\n", d.idx, len(s.domains))
}

// prepare creates d's bucket if needed and checks its layout marker.
func (s *Store) prepare(ctx context.Context, d *domain) error {
	err := s.do(ctx, d, func(ctx context.Context) error {
		ok, err := d.client.BucketExists(ctx, d.cfg.Bucket)
		if err != nil || ok {
			return err
		}
		err = d.client.MakeBucket(ctx, d.cfg.Bucket, minio.MakeBucketOptions{Region: d.cfg.Region})
		if c := minio.ToErrorResponse(err).Code; c == "BucketAlreadyOwnedByYou" || c == "BucketAlreadyExists" {
			return nil
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("s3store: creating bucket: %w", err)
	}
	want := s.marker(d)
	got, err := s.getObject(ctx, d, s.markerKey())
	switch {
	case errors.Is(err, errNotFound):
		if err := s.putObject(ctx, d, s.markerKey(), want); err != nil {
			return fmt.Errorf("s3store: writing layout marker: %w", err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("s3store: reading layout marker: %w", err)
	case !bytes.Equal(got, want):
		return fmt.Errorf("%w: %s holds %q, expected %q (keep the Domains order; use distinct buckets or Prefixes)",
			ErrLayout, d, strings.TrimSpace(string(got)), strings.TrimSpace(string(want)))
	}
	return nil
}

// NewGroup returns a Group whose Writers are the Store's own: an object is
// durable once its domain acknowledges it, so there is nothing to share.
func (s *Store) NewGroup() kv.SliceGroup { return group{s} }

type group struct{ s *Store }

func (g group) NewWriter() kv.SliceWriter      { return g.s.NewWriter() }
func (g group) Sync(ctx context.Context) error { return nil }

// Close releases idle connections. Calls after Close return ErrClosed.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return ErrClosed
	}
	if s.own != nil {
		s.own.CloseIdleConnections()
	}
	return nil
}

// Stats are request counters.
type Stats struct {
	// Requests is the number of request attempts sent (listing pages
	// counted once per listing attempt).
	Requests int64
	// Retries is how many attempts were repeats of a failed one.
	Retries int64
	// Failures is how many operations failed after all attempts.
	Failures int64
	// Stragglers is how many Gets abandoned slow shards (see
	// Config.StragglerWait).
	Stragglers int64
	// Down are the indexes of the domains currently in cooldown.
	Down []int
}

// Stats returns the request counters.
func (s *Store) Stats() Stats {
	st := Stats{Requests: s.requests.Load(), Retries: s.retries.Load(), Failures: s.failures.Load(), Stragglers: s.stragglers.Load()}
	for _, d := range s.domains {
		if d.isDown() {
			st.Down = append(st.Down, d.idx)
		}
	}
	return st
}

// Domains returns the number of failure domains.
func (s *Store) Domains() int { return len(s.domains) }

// Placement returns the index of the domain holding shard idx of the slice
// at l.
func (s *Store) Placement(l kv.ShardLocation, idx int) int { return s.shardDomain(l, idx).idx }

// rot is the domain of shard 0 of l. Consecutive counters of one Put land
// on consecutive domains. This is part of the data layout: never change it.
func (s *Store) rot(l kv.ShardLocation) int {
	return int((binary.BigEndian.Uint64(l.Session[8:]) + l.Ctr) % uint64(len(s.domains)))
}

func (s *Store) shardDomain(l kv.ShardLocation, idx int) *domain {
	return s.domains[(s.rot(l)+idx)%len(s.domains)]
}

// headerDomains are the domains keeping l's header: those of shards
// 0..HeaderCopies-1.
func (s *Store) headerDomains(l kv.ShardLocation) []*domain {
	out := make([]*domain, s.cfg.HeaderCopies)
	for j := range out {
		out[j] = s.shardDomain(l, j)
	}
	return out
}

func (s *Store) sessionPrefix(kind string, sid [16]byte) string {
	return s.cfg.Prefix + kind + "/" + hex.EncodeToString(sid[:]) + "/"
}

func (s *Store) locPrefix(kind string, l kv.ShardLocation) string {
	return s.sessionPrefix(kind, l.Session) + fmt.Sprintf("%016x.", l.Ctr)
}

func (s *Store) shardKey(l kv.ShardLocation, idx int) string {
	return s.locPrefix("s", l) + fmt.Sprintf("%02x", idx)
}

func (s *Store) headerKey(l kv.ShardLocation, id *[64]byte) string {
	return s.locPrefix("h", l) + hex.EncodeToString(id[:])
}

// parseCtr reads the counter of a key under a session prefix.
func parseCtr(rest string) (uint64, string, bool) {
	if len(rest) < 17 || rest[16] != '.' {
		return 0, "", false
	}
	ctr, err := strconv.ParseUint(rest[:16], 16, 64)
	return ctr, rest[17:], err == nil
}

func (s *Store) check(ctx context.Context) error {
	if s.closed.Load() {
		return ErrClosed
	}
	return ctx.Err()
}

// Get returns the first n shards of the slice at l. A shard whose object
// is missing, too large to be a shard, unreadable, or in a domain that
// does not answer is nil; sealkv rebuilds it from parity (an object too
// large is damage, and Scrub rewrites it). If a domain did not answer, the
// shards come with an error wrapping kv.ErrUnavailable (see
// kv.SliceStore), even if none answered. Get fails otherwise only if ctx
// ends.
func (s *Store) Get(ctx context.Context, l kv.ShardLocation, n int) ([][]byte, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	if n < 0 || n > maxShards {
		return nil, fmt.Errorf("s3store: Get of %d shards", n)
	}
	shards := make([][]byte, n)
	errs := make([]error, n)
	gctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan int, n)
	start := time.Now()
	for i := range n {
		go func() {
			shards[i], errs[i] = s.getShard(gctx, s.shardDomain(l, i), s.shardKey(l, i))
			done <- i
		}()
	}
	// Once half the shards are in, stragglers get StragglerWait or four
	// times as long as the half took, whichever is longer; then they are
	// abandoned as missing (parity covers them) rather than holding up the
	// read, e.g. behind a gateway that retries a dead server for seconds.
	var cutoff <-chan time.Time
	abandoned := false
	for got := 0; got < n; {
		select {
		case i := <-done:
			got++
			if abandoned && errs[i] != nil && !missing(errs[i]) {
				s.shardDomain(l, i).readFails.Add(1) // counts toward sickReads
			}
			if got == (n+1)/2 && got < n && s.cfg.StragglerWait > 0 {
				t := time.NewTimer(max(s.cfg.StragglerWait, 4*time.Since(start)))
				defer t.Stop()
				cutoff = t.C
			}
		case <-cutoff:
			cutoff, abandoned = nil, true
			s.stragglers.Add(1)
			cancel()
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	failed := map[int]error{}
	for i, err := range errs {
		if err != nil && !missing(err) {
			failed[s.shardDomain(l, i).idx] = err
		}
	}
	if len(failed) == 0 {
		return shards, nil
	}
	all := make([]error, 0, len(failed))
	for _, err := range failed {
		all = append(all, err)
	}
	// Some domains did not answer: their shards are nil but may well
	// exist. The caller rebuilds them from parity if it can, and otherwise
	// must not take the slice for damaged. That holds even if none of the
	// domains asked answered: the caller may ask for the data shards
	// only, and then reads the parity shards in other domains.
	return shards, fmt.Errorf("s3store: slice %x/%016x: %d domain(s) did not answer: %w: %w", l.Session, l.Ctr, len(failed), kv.ErrUnavailable, errors.Join(all...))
}

// PutShard durably writes shard idx of the slice at l (a repair).
func (s *Store) PutShard(ctx context.Context, l kv.ShardLocation, idx int, shard []byte) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	if idx < 0 || idx >= maxShards {
		return fmt.Errorf("s3store: shard index %d", idx)
	}
	return s.putObject(ctx, s.shardDomain(l, idx), s.shardKey(l, idx), shard)
}

// Delete removes every object (shards and headers) of the slices at locs
// from every domain. Objects already gone are fine; a domain that cannot be
// reached makes Delete fail, so the caller keeps its intent and retries.
func (s *Store) Delete(ctx context.Context, locs []kv.ShardLocation) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	if len(locs) == 0 {
		return nil
	}
	groups := groupByPut(locs)
	errs := make([]error, len(s.domains))
	var wg sync.WaitGroup
	for i, d := range s.domains {
		wg.Go(func() {
			keys, err := s.listGroups(ctx, d, groups)
			if err == nil {
				err = s.removeKeys(ctx, d, keys)
			}
			errs[i] = err
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("s3store: delete: %w", err)
	}
	return nil
}

// putGroup is the locations of one Put (same session, same high 32 bits
// of the counter) being deleted.
type putGroup struct {
	sid  [16]byte
	put  uint32
	ctrs map[uint64]bool
	locs []kv.ShardLocation
}

func groupByPut(locs []kv.ShardLocation) []*putGroup {
	type gk struct {
		sid [16]byte
		put uint32
	}
	m := map[gk]*putGroup{}
	var out []*putGroup
	for _, l := range locs {
		k := gk{l.Session, uint32(l.Ctr >> 32)}
		g := m[k]
		if g == nil {
			g = &putGroup{sid: l.Session, put: k.put, ctrs: map[uint64]bool{}}
			m[k] = g
			out = append(out, g)
		}
		if !g.ctrs[l.Ctr] {
			g.ctrs[l.Ctr] = true
			g.locs = append(g.locs, l)
		}
	}
	return out
}

// groupListLimit: groups with more locations are found with one listing
// of the whole Put's prefix instead of one per location.
const groupListLimit = 4

// listGroups returns the keys of the groups' objects in d, listing up to
// listParallel groups at a time.
func (s *Store) listGroups(ctx context.Context, d *domain, groups []*putGroup) ([]string, error) {
	var (
		mu    sync.Mutex
		keys  []string
		first error
		wg    sync.WaitGroup
	)
	sem := make(chan struct{}, listParallel)
	for _, g := range groups {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			k, err := s.listGroup(ctx, d, g)
			mu.Lock()
			defer mu.Unlock()
			keys = append(keys, k...)
			if err != nil && first == nil {
				first = err
			}
		})
	}
	wg.Wait()
	return keys, first
}

// listParallel bounds the listings one Delete runs at once per domain.
const listParallel = 8

// listGroup returns the keys of g's objects in d.
func (s *Store) listGroup(ctx context.Context, d *domain, g *putGroup) ([]string, error) {
	var keys []string
	for _, kind := range []string{"s", "h"} {
		sp := s.sessionPrefix(kind, g.sid)
		collect := func(key string) error {
			if ctr, _, ok := parseCtr(strings.TrimPrefix(key, sp)); ok && g.ctrs[ctr] {
				keys = append(keys, key)
			}
			return nil
		}
		var prefixes []string
		if len(g.locs) > groupListLimit {
			prefixes = []string{sp + fmt.Sprintf("%08x", g.put)}
		} else {
			for _, l := range g.locs {
				prefixes = append(prefixes, s.locPrefix(kind, l))
			}
		}
		for _, p := range prefixes {
			if err := s.list(ctx, d, p, true, collect); err != nil {
				return nil, err
			}
		}
	}
	return keys, nil
}

// Headers yields the location and SliceID of every slice written in
// session sid, in location order, merging the header listings of all
// domains. A domain that cannot be listed is skipped: each header has
// copies in Config.HeaderCopies domains. If that many could not be listed,
// a header may be missing from all the others, and Headers yields an error
// last (recovery then lists the session again at the next Open).
func (s *Store) Headers(ctx context.Context, sid [16]byte) iter.Seq2[kv.SliceHeader, error] {
	return func(yield func(kv.SliceHeader, error) bool) {
		if err := s.check(ctx); err != nil {
			yield(kv.SliceHeader{}, err)
			return
		}
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		type entry struct {
			ctr uint64
			id  [64]byte
		}
		prefix := s.sessionPrefix("h", sid)
		chans := make([]chan entry, len(s.domains))
		var failed atomic.Int32 // domains whose listing failed
		var wg sync.WaitGroup
		defer wg.Wait()
		defer cancel() // runs before wg.Wait
		for i, d := range s.domains {
			ch := make(chan entry, 256)
			chans[i] = ch
			wg.Go(func() {
				defer close(ch)
				// No request slot: each domain's listing waits for the
				// merge below, which waits for every domain's listing,
				// so with fewer slots than domains they would deadlock.
				// There is one listing per domain, at crash recovery.
				err := s.list(ctx, d, prefix, false, func(key string) error {
					ctr, rest, ok := parseCtr(strings.TrimPrefix(key, prefix))
					var e entry
					if !ok || len(rest) != 2*len(e.id) {
						return nil // not a header (checked first: hex.Decode writes what it decodes)
					}
					if _, err := hex.Decode(e.id[:], []byte(rest)); err != nil {
						return nil
					}
					e.ctr = ctr
					select {
					case ch <- e:
						return nil
					case <-ctx.Done():
						return ctx.Err()
					}
				})
				if err != nil && ctx.Err() == nil {
					failed.Add(1)
					s.log.Warn("s3store: listing headers failed; other domains' copies are used", "domain", d.String(), "err", err)
				}
			})
		}
		heads := make([]*entry, len(chans))
		pull := func(i int) {
			heads[i] = nil
			if e, ok := <-chans[i]; ok {
				heads[i] = &e
			}
		}
		for i := range chans {
			pull(i)
		}
		var last *uint64
		for {
			lo := -1
			for i, h := range heads {
				if h != nil && (lo < 0 || h.ctr < heads[lo].ctr) {
					lo = i
				}
			}
			if lo < 0 {
				break
			}
			e := *heads[lo]
			for i, h := range heads {
				if h != nil && h.ctr == e.ctr {
					pull(i)
				}
			}
			if last != nil && *last == e.ctr {
				continue
			}
			last = &e.ctr
			if !yield(kv.SliceHeader{Location: kv.ShardLocation{Session: sid, Ctr: e.ctr}, ID: e.id}, nil) {
				return
			}
		}
		// Every listing has ended: its channel is closed.
		switch n := int(failed.Load()); {
		case ctx.Err() != nil:
			yield(kv.SliceHeader{}, ctx.Err())
		case n >= s.cfg.HeaderCopies:
			yield(kv.SliceHeader{}, fmt.Errorf("%w: listing headers failed in %d domains, and each header is kept in %d", kv.ErrUnavailable, n, s.cfg.HeaderCopies))
		}
	}
}

// getShard reads a shard's object, with fewer attempts on a sick domain.
func (s *Store) getShard(ctx context.Context, d *domain, key string) ([]byte, error) {
	attempts := s.cfg.Retry.Attempts
	if d.readFails.Load() >= sickReads {
		attempts = 1
	}
	b, err := s.getObjectN(ctx, d, key, attempts)
	switch {
	case err == nil || missing(err):
		d.readFails.Store(0)
		if errors.Is(err, errDamaged) {
			s.log.Warn("s3store: shard object damaged; parity covers it", "err", err)
		}
	case ctx.Err() == nil: // (abandoned stragglers are counted by Get)
		d.readFails.Add(1)
	}
	return b, err
}

// getObject reads one object; errNotFound if it does not exist.
func (s *Store) getObject(ctx context.Context, d *domain, key string) ([]byte, error) {
	return s.getObjectN(ctx, d, key, s.cfg.Retry.Attempts)
}

func (s *Store) getObjectN(ctx context.Context, d *domain, key string, attempts int) ([]byte, error) {
	var body []byte
	err := s.doN(ctx, d, attempts, func(ctx context.Context) error {
		rc, info, _, err := d.core.GetObject(ctx, d.cfg.Bucket, key, minio.GetObjectOptions{})
		if err != nil {
			return err
		}
		defer rc.Close()
		if info.Size < 0 || info.Size > maxObject {
			return permanent{fmt.Errorf("%w: object %s has size %d", errDamaged, key, info.Size)}
		}
		b := make([]byte, info.Size)
		if _, err := io.ReadFull(rc, b); err != nil {
			return err
		}
		body = b
		return nil
	})
	return body, err
}

// putObject writes one object in a single PUT.
func (s *Store) putObject(ctx context.Context, d *domain, key string, body []byte) error {
	if int64(len(body)) > maxObject {
		return fmt.Errorf("s3store: object %s of %d bytes, more than any shard can be (%d)", key, len(body), maxObject)
	}
	return s.do(ctx, d, func(ctx context.Context) error {
		_, err := d.client.PutObject(ctx, d.cfg.Bucket, key, bytes.NewReader(body), int64(len(body)), minio.PutObjectOptions{
			ContentType:          "application/octet-stream",
			DisableMultipart:     true,
			DisableContentSha256: true, // no streaming signature; integrity by Content-MD5
			SendContentMd5:       !s.cfg.DisableContentMD5,
		})
		return err
	})
}

// removeKeys deletes keys from d in batches of 1000 (multi-object delete).
func (s *Store) removeKeys(ctx context.Context, d *domain, keys []string) error {
	for len(keys) > 0 {
		batch := keys[:min(len(keys), 1000)]
		keys = keys[len(batch):]
		err := s.do(ctx, d, func(ctx context.Context) error {
			ch := make(chan minio.ObjectInfo, len(batch))
			for _, k := range batch {
				ch <- minio.ObjectInfo{Key: k}
			}
			close(ch)
			var first error
			for e := range d.client.RemoveObjects(ctx, d.cfg.Bucket, ch, minio.RemoveObjectsOptions{}) {
				if e.Err != nil && classify(e.Err) != classNotFound && first == nil {
					first = e.Err
				}
			}
			return first
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// list calls fn for every key with prefix in d, in key order, resuming
// after the last key seen when a page fails. With slot set the listing
// takes one of the Concurrency request slots while it runs.
func (s *Store) list(ctx context.Context, d *domain, prefix string, slot bool, fn func(key string) error) error {
	if d.isDown() {
		return fmt.Errorf("%w: %s", ErrDomainDown, d)
	}
	after := ""
	var err error
	for attempt := 0; attempt < s.cfg.Retry.Attempts; attempt++ {
		if attempt > 0 {
			s.retries.Add(1)
			if !s.sleep(ctx, attempt) {
				return ctx.Err()
			}
		}
		var progressed bool
		progressed, err = s.listOnce(ctx, d, prefix, after, slot, func(key string) error {
			after = key
			return fn(key)
		})
		if err == nil {
			d.up()
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var p permanent
		if errors.As(err, &p) || classify(err) == classPermanent {
			break
		}
		if progressed {
			attempt = 0 // a long listing may hit several unrelated errors
		}
	}
	return s.fail(d, err)
}

// listOnce runs one listing from after, until it ends or fails; each page
// must arrive within the attempt timeout.
func (s *Store) listOnce(ctx context.Context, d *domain, prefix, after string, slot bool, fn func(string) error) (progressed bool, err error) {
	if slot {
		if err := s.acquire(ctx); err != nil {
			return false, err
		}
		defer s.release()
	}
	s.requests.Add(1)
	lctx, a, cancel := withAttempt(ctx, 0)
	defer cancel()
	timer := time.AfterFunc(s.cfg.Retry.AttemptTimeout, cancel)
	defer timer.Stop()
	idle := func() error {
		if cause := a.err(); cause != nil {
			return cause
		}
		return fmt.Errorf("listing %s: no page within %v: %w", prefix, s.cfg.Retry.AttemptTimeout, context.DeadlineExceeded)
	}
	ch := d.client.ListObjects(lctx, d.cfg.Bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true, StartAfter: after})
	defer func() {
		cancel()
		for range ch { // let the lister goroutine finish
		}
	}()
	for o := range ch {
		timer.Reset(s.cfg.Retry.AttemptTimeout)
		if o.Err != nil {
			if lctx.Err() != nil && ctx.Err() == nil {
				return progressed, idle()
			}
			return progressed, o.Err
		}
		if !strings.HasPrefix(o.Key, prefix) || o.Key <= after && after != "" {
			continue
		}
		progressed = true
		if err := fn(o.Key); err != nil {
			return progressed, permanent{err}
		}
	}
	if lctx.Err() != nil && ctx.Err() == nil {
		return progressed, idle()
	}
	return progressed, ctx.Err()
}
