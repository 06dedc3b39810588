package netns

import (
	"testing"

	"github.com/scoped-io/scoped/internal/testutil"
)

func TestMain(m *testing.M) { testutil.HelperMain(m) }
