package fleet

import (
	"errors"
	"fmt"
	"testing"
)

// ErrNoBundle is an ErrUnavailable (callers that check for the fleet being
// unavailable see it) with its own text; ErrUnavailable is not it.
func TestErrNoBundle(t *testing.T) {
	err := fmt.Errorf("fetch: %w", ErrNoBundle)
	if !errors.Is(err, ErrNoBundle) || !errors.Is(err, ErrUnavailable) {
		t.Errorf("%v: not ErrNoBundle and ErrUnavailable", err)
	}
	if errors.Is(fmt.Errorf("write: %w", ErrUnavailable), ErrNoBundle) {
		t.Error("ErrUnavailable is ErrNoBundle")
	}
	if ErrNoBundle.Error() == ErrUnavailable.Error() {
		t.Error("ErrNoBundle has ErrUnavailable's text")
	}
}
