package s3store

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"syscall"
	"time"

	"github.com/minio/minio-go/v7"
)

// permanent marks an error that retrying cannot fix.
type permanent struct{ err error }

func (p permanent) Error() string { return p.err.Error() }
func (p permanent) Unwrap() error { return p.err }

type class int

const (
	classRetry     class = iota // server error, throttling, broken transfer: retry
	classNotFound               // the object does not exist
	classPermanent              // the request itself is wrong: do not retry
	classDown                   // no connection could be made: retry, then cool down
)

// classify sorts a request error.
func classify(err error) class {
	var p permanent
	if errors.As(err, &p) {
		return classPermanent
	}
	if errors.Is(err, errNotFound) {
		return classNotFound
	}
	var er minio.ErrorResponse
	if errors.As(err, &er) && (er.Code != "" || er.StatusCode != 0) {
		switch er.Code {
		case "NoSuchKey", "NoSuchVersion":
			return classNotFound
		case "SlowDown", "SlowDownRead", "SlowDownWrite", "InternalError", "ServiceUnavailable",
			"RequestTimeout", "RequestTimeTooSkewed", "XMinioServerNotInitialized", "OperationAborted",
			"BadDigest", "IncompleteBody", "ExpiredToken":
			return classRetry
		}
		switch {
		case er.StatusCode == http.StatusNotFound && er.Code == "":
			return classNotFound
		case er.StatusCode >= 500, er.StatusCode == http.StatusTooManyRequests, er.StatusCode == http.StatusRequestTimeout:
			return classRetry
		case er.StatusCode == 0:
			return classRetry // a per-object error of a multi-delete without status
		}
		return classPermanent
	}
	if isDial(err) {
		return classDown
	}
	return classRetry // transport: reset, EOF mid-body, attempt timeout
}

// isDial reports a failure to connect at all: the domain is down (or
// unreachable), as opposed to one request going wrong.
func isDial(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ENETUNREACH)
}

func (d *domain) isDown() bool { return time.Now().UnixNano() < d.downUntil.Load() }
func (d *domain) up()          { d.downUntil.Store(0) }

// detachKey marks a context whose cancellation stops further attempts
// but lets a request already sent run to its response (or the attempt
// timeout). Writer uploads use it: a PUT cut off mid-flight may still be
// committed by the server after the writer's cleanup deleted its key,
// leaving an orphan; a PUT that ran to its response is settled.
type detachKey struct{}

func detached(ctx context.Context) context.Context {
	return context.WithValue(ctx, detachKey{}, true)
}

// do runs op against d, retrying per the policy. op gets a context bounded
// by the attempt timeout; the semaphore is held only while it runs.
func (s *Store) do(ctx context.Context, d *domain, op func(context.Context) error) error {
	return s.doN(ctx, d, s.cfg.Retry.Attempts, op)
}

// doN is do with the given number of attempts.
func (s *Store) doN(ctx context.Context, d *domain, attempts int, op func(context.Context) error) error {
	if d.isDown() {
		return fmt.Errorf("%w: %s", ErrDomainDown, d)
	}
	var err error
	for attempt := 0; attempt < attempts; attempt++ {
		if attempt > 0 {
			s.retries.Add(1)
			if !s.sleep(ctx, attempt) {
				return ctx.Err()
			}
			if d.isDown() { // another call found it down meanwhile
				return fmt.Errorf("%w: %s", ErrDomainDown, d)
			}
		}
		if err := s.acquire(ctx); err != nil {
			return err
		}
		base := ctx
		if ctx.Value(detachKey{}) != nil {
			base = context.WithoutCancel(ctx)
		}
		actx, a, cancel := withAttempt(base, s.cfg.Retry.AttemptTimeout)
		s.requests.Add(1)
		err = op(actx)
		cancel()
		s.release()
		if cause := a.err(); cause != nil && err != nil && ctx.Err() == nil {
			err = cause // the failure fastFail saw, not the cancellation
		}
		if err == nil {
			d.up()
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		switch classify(err) {
		case classNotFound:
			d.up()
			return errNotFound
		case classPermanent:
			d.up()
			return s.fail(d, err)
		}
	}
	return s.fail(d, err)
}

// fail counts a failed operation and starts d's cooldown if d could not be
// connected to.
func (s *Store) fail(d *domain, err error) error {
	s.failures.Add(1)
	if classify(err) == classDown && !d.isDown() {
		d.downUntil.Store(time.Now().Add(s.cfg.Retry.Cooldown).UnixNano())
		s.log.Warn("s3store: domain unreachable, skipping it for a while", "domain", d.String(), "cooldown", s.cfg.Retry.Cooldown, "err", err)
	}
	return fmt.Errorf("s3store: %s: %w", d, err)
}

// sleep waits the backoff before retry attempt (1-based), with full jitter
// in its upper half. It returns false if ctx ended.
func (s *Store) sleep(ctx context.Context, attempt int) bool {
	r := s.cfg.Retry
	b := r.Backoff << min(attempt-1, 20)
	if b > r.MaxBackoff || b <= 0 {
		b = r.MaxBackoff
	}
	b = b/2 + rand.N(b/2+1)
	t := time.NewTimer(b)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func (s *Store) acquire(ctx context.Context) error {
	select {
	case s.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Store) release() { <-s.sem }
