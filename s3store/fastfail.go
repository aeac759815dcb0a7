package s3store

import (
	"bytes"
	"context"
	"encoding/xml"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"
)

// minio-go retries inside each call and, even with MaxRetries 1, sleeps
// its own backoff (up to 200 ms) after a retryable failure before
// returning it. Our retries have their own policy, so fastFail cuts that
// sleep short: when a request fails (transport error, or a retryable
// status whose body minio has read), it records the failure in the
// attempt and cancels the attempt's context, which ends minio's sleep at
// once; do then reports the recorded failure instead of the cancellation.
type fastFail struct{ next http.RoundTripper }

type attemptKey struct{}

// attempt is the state of one request attempt shared with fastFail.
type attempt struct {
	cancel context.CancelFunc
	mu     sync.Mutex
	cause  error
}

func (a *attempt) fail(err error) {
	a.mu.Lock()
	if a.cause == nil {
		a.cause = err
	}
	a.mu.Unlock()
	a.cancel()
}

func (a *attempt) err() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cause
}

// withAttempt returns a context for one attempt, bounded by timeout if
// positive.
func withAttempt(ctx context.Context, timeout time.Duration) (context.Context, *attempt, context.CancelFunc) {
	// One derived context only: one left uncancelled would stay with ctx
	// until ctx ends.
	var actx context.Context
	var cancel context.CancelFunc
	if timeout > 0 {
		actx, cancel = context.WithTimeout(ctx, timeout)
	} else {
		actx, cancel = context.WithCancel(ctx)
	}
	a := &attempt{cancel: cancel}
	return context.WithValue(actx, attemptKey{}, a), a, cancel
}

func (f fastFail) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := f.next.RoundTrip(r)
	a, _ := r.Context().Value(attemptKey{}).(*attempt)
	if a == nil {
		return resp, err
	}
	if err != nil {
		a.fail(err)
		return resp, err
	}
	if resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusRequestTimeout {
		resp.Body = &errorBody{ReadCloser: resp.Body, a: a, status: resp.StatusCode}
	}
	return resp, nil
}

// errorBody keeps the start of an error response and fails the attempt
// when minio closes it.
type errorBody struct {
	io.ReadCloser
	a      *attempt
	status int
	buf    bytes.Buffer
}

func (b *errorBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if b.buf.Len() < 64<<10 {
		b.buf.Write(p[:n])
	}
	return n, err
}

func (b *errorBody) Close() error {
	err := b.ReadCloser.Close()
	er := minio.ErrorResponse{}
	_ = xml.Unmarshal(b.buf.Bytes(), &er)
	er.StatusCode = b.status
	if er.Code == "" {
		er.Code = http.StatusText(b.status)
	}
	b.a.fail(er)
	return err
}
