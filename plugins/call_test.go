package plugins

import (
	"errors"
	"io"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The supervisor's worker client hands on no gRPC status: a reply over the
// receive limit is ErrReplyTooLarge, any other status its message alone.
func TestCallError(t *testing.T) {
	if callError(nil) != nil {
		t.Fatal("nil became an error")
	}
	if err := callError(io.EOF); err != io.EOF {
		t.Errorf("a plain error became %v", err)
	}
	big := status.Error(codes.ResourceExhausted, "grpc: received message larger than max (9 vs. 8)")
	if err := callError(big); !errors.Is(err, ErrReplyTooLarge) || err.Error() != "worker reply too large: grpc: received message larger than max (9 vs. 8)" {
		t.Errorf("over the limit: %v", err)
	}
	err := callError(status.Error(codes.Unavailable, "error reading from server: EOF"))
	if err.Error() != "error reading from server: EOF" || errors.Is(err, ErrReplyTooLarge) {
		t.Errorf("a broken connection: %v", err)
	}
	if _, ok := status.FromError(err); ok {
		t.Errorf("%v still carries a status", err)
	}
}
