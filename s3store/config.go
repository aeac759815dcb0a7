package s3store

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"
)

// Domain is one failure domain: an S3-compatible endpoint and a bucket on
// it. Shards placed in different domains should not share a failure: give
// each domain its own endpoint (cluster, site, rack) where you can. Two
// buckets on one cluster are distinct domains only if the cluster keeps
// their data on disjoint servers.
type Domain struct {
	// Endpoint is host:port, without scheme (e.g. "s3.example.net",
	// "127.0.0.1:8333").
	Endpoint string
	// Bucket is created by New if it does not exist.
	Bucket string
	// AccessKey and SecretKey sign requests (AWS signature v4). Both empty
	// means anonymous requests.
	AccessKey, SecretKey string
	// Secure selects HTTPS.
	Secure bool
	// Region of the bucket; "us-east-1" if empty. Setting it spares the
	// bucket-location lookup S3 clients otherwise do first.
	Region string
}

// String is the domain's URL: scheme://Endpoint/Bucket.
func (d Domain) String() string {
	scheme := "http"
	if d.Secure {
		scheme = "https"
	}
	return fmt.Sprintf("%s://%s/%s", scheme, d.Endpoint, d.Bucket)
}

// Retry is the retry policy of every request.
type Retry struct {
	// Attempts is how many times a request is tried in all (1 = no
	// retries); default 4.
	Attempts int
	// Backoff is the wait before the first retry; it doubles (with jitter)
	// up to MaxBackoff. Defaults 50 ms and 2 s.
	Backoff, MaxBackoff time.Duration
	// AttemptTimeout bounds one attempt (for a listing: the wait for the
	// next page); default 30 s. The caller's context bounds the whole.
	AttemptTimeout time.Duration
	// Cooldown is how long a domain that could not be connected to on
	// every attempt of a request (connection refused, host unreachable,
	// dial timeout) is skipped: reads treat its shards as missing at once
	// and writes to it fail at once, instead of every request waiting
	// through its retries. Errors from a server that answers never start a
	// cooldown. Default 5 s.
	Cooldown time.Duration
}

// Config configures a Store.
type Config struct {
	// Domains are the failure domains. Shard i of a slice goes to domain
	// (r+i) mod len(Domains), where r is derived from the slice's location
	// so load spreads. Losing a domain loses at most ⌈(k+m)/len(Domains)⌉
	// shards of any slice; with len(Domains) ≥ k+m every shard has its own
	// domain and up to m domains may be lost. See Tolerates.
	//
	// The order is part of the data layout: New records each domain's index
	// in its bucket and refuses a reordered, shortened or lengthened list.
	Domains []Domain
	// Prefix is prepended to every object key, so several stores can share
	// buckets. Default "" (the buckets belong to this store).
	Prefix string
	// Concurrency bounds the requests in flight across the Store (every
	// Writer, Get, Delete; Headers, which crash recovery calls, lists
	// each domain once besides); default 32.
	Concurrency int
	// WriteWindow bounds the shard bytes one Writer has in flight; Add
	// blocks beyond it. Default 16 MiB.
	WriteWindow int
	// HeaderCopies is the number of domains that keep each slice's header
	// (its SliceID, used by crash recovery to find shards of a Put that
	// never committed); default min(3, len(Domains)). A lost header only
	// leaks the slice's shards after a crash; it never loses data.
	HeaderCopies int
	// Retry is the retry policy.
	Retry Retry
	// StragglerWait: once half the shards a Get asked for have arrived,
	// the others get this long, or four times as long as the first half
	// took if that is longer, before they are abandoned as missing (the
	// reader rebuilds them from parity). A read then does not wait for a
	// domain that hangs, e.g. a gateway retrying a dead server. Default
	// 300 ms; negative disables.
	StragglerWait time.Duration
	// Transport carries the requests of every domain; nil means a
	// transport tuned for Concurrency connections per endpoint. Set it for
	// custom TLS roots, proxies or tests.
	Transport http.RoundTripper
	// DisableContentMD5 drops the Content-MD5 header every PUT carries by
	// default, with which the server rejects a body damaged in transit
	// (sealkv also checksums each shard, so such damage would otherwise be
	// found on read and repaired from parity).
	DisableContentMD5 bool
	// Logger receives warnings (a domain going down, a failed cleanup);
	// slog.Default() if nil.
	Logger *slog.Logger
}

// Defaults.
const (
	DefaultConcurrency    = 32
	DefaultWriteWindow    = 16 << 20
	DefaultAttempts       = 4
	DefaultBackoff        = 50 * time.Millisecond
	DefaultMaxBackoff     = 2 * time.Second
	DefaultAttemptTimeout = 30 * time.Second
	DefaultCooldown       = 5 * time.Second
	DefaultStragglerWait  = 300 * time.Millisecond
	defaultRegion         = "us-east-1"
)

// maxShards is the most shards a slice can have (k+m ≤ 255).
const maxShards = 255

func (c Config) resolve() (Config, error) {
	if len(c.Domains) == 0 {
		return c, errors.New("s3store: no domains")
	}
	if len(c.Domains) > maxShards {
		return c, fmt.Errorf("s3store: %d domains, at most %d are useful", len(c.Domains), maxShards)
	}
	c.Domains = append([]Domain(nil), c.Domains...)
	for i, d := range c.Domains {
		if d.Endpoint == "" || d.Bucket == "" {
			return c, fmt.Errorf("s3store: domain %d: Endpoint and Bucket are required", i)
		}
		if d.Region == "" {
			c.Domains[i].Region = defaultRegion
		}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&c.Concurrency, DefaultConcurrency)
	def(&c.WriteWindow, DefaultWriteWindow)
	def(&c.HeaderCopies, min(3, len(c.Domains)))
	c.HeaderCopies = min(c.HeaderCopies, len(c.Domains))
	def(&c.Retry.Attempts, DefaultAttempts)
	defd := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	defd(&c.Retry.Backoff, DefaultBackoff)
	defd(&c.Retry.MaxBackoff, DefaultMaxBackoff)
	defd(&c.Retry.AttemptTimeout, DefaultAttemptTimeout)
	defd(&c.Retry.Cooldown, DefaultCooldown)
	if c.StragglerWait == 0 {
		c.StragglerWait = DefaultStragglerWait
	}
	return c, nil
}

// Tolerates returns how many whole domains a slice of k data and m parity
// shards can lose and still be read, given that many failure domains: the
// largest f such that the f domains holding the most shards hold at most m.
// With the defaults k=8, m=2 it is 0 for fewer than 5 domains, 1 for 5 to
// 9 and 2 for 10 or more.
func Tolerates(domains, k, m int) int {
	if domains <= 0 || k <= 0 || m < 0 {
		return 0
	}
	n := k + m
	q, r := n/domains, n%domains // r domains hold q+1 shards, the rest q
	f := 0
	for f < domains {
		lost := (f+1)*q + min(f+1, r)
		if lost > m {
			break
		}
		f++
	}
	return f
}
