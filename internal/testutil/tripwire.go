package testutil

import (
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// Tripwire is a root-only unix socket that the code under test must never
// connect to (a worker's symlink or bind mount pointing at a host socket);
// Strays counts the connections it got. It is closed when the test ends.
type Tripwire struct {
	Path   string
	ln     net.Listener
	marker chan int // the accept index of the tripwire's own connection
	marks  int      // the tripwire's own connections so far
	mu     sync.Mutex
	conns  []net.Conn
	done   chan struct{}
}

// NewTripwire listens on a new Tripwire.
func NewTripwire(t testing.TB) *Tripwire {
	t.Helper()
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	tw := &Tripwire{Path: filepath.Join(dir, "s"), marker: make(chan int, 1), done: make(chan struct{})}
	ln, err := net.Listen("unix", tw.Path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(tw.Path, 0o600); err != nil {
		ln.Close()
		t.Fatal(err)
	}
	tw.ln = ln
	go tw.serve()
	t.Cleanup(func() {
		ln.Close()
		<-tw.done
		tw.mu.Lock()
		for _, c := range tw.conns {
			c.Close()
		}
		tw.mu.Unlock()
	})
	return tw
}

// serve accepts in order; a connection that sends "M" is the tripwire's
// own (see Strays).
func (tw *Tripwire) serve() {
	defer close(tw.done)
	for i := 1; ; i++ {
		c, err := tw.ln.Accept()
		if err != nil {
			return
		}
		tw.mu.Lock()
		tw.conns = append(tw.conns, c)
		tw.mu.Unlock()
		go func() {
			var b [1]byte
			_ = c.SetReadDeadline(time.Now().Add(time.Minute))
			if _, err := io.ReadFull(c, b[:]); err == nil && b[0] == 'M' {
				tw.marker <- i
			}
		}()
	}
}

// Strays connects to the tripwire itself, which shows that it listens, and
// returns how many other connections it accepted before that one: a
// listener accepts in the order of the connects, so every earlier one is
// counted.
func (tw *Tripwire) Strays(t testing.TB) int {
	t.Helper()
	c, err := net.Dial("unix", tw.Path)
	if err != nil {
		t.Fatalf("the tripwire does not listen: %v", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("M")); err != nil {
		t.Fatal(err)
	}
	tw.marks++
	select {
	case i := <-tw.marker:
		return i - tw.marks
	case <-time.After(time.Minute):
		t.Fatal("the tripwire did not accept its own connection")
		return 0
	}
}
