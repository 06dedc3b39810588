// Command netprobe is a test extension that reports what its scope's
// network lets it do. The payload is a JSON request:
//
//	{"op":"dial","net":"tcp|udp|udp-sendto|unix","addr":"host:port"}
//	{"op":"send","addr":"host:port","seconds":3}  write as fast as allowed
//	{"op":"recv","addr":"host:port","seconds":3}  read as fast as allowed
//	{"op":"info"}                                  addresses of the namespace
//
// and the result is JSON: ok, the error and its errno name, a banner read
// from the peer, or bytes per 100 ms tick for send and recv.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/scoped-io/scoped/plugins"
)

type request struct {
	Op      string  `json:"op"`
	Net     string  `json:"net"`
	Addr    string  `json:"addr"`
	Seconds float64 `json:"seconds"`
}

type result struct {
	OK     bool     `json:"ok"`
	Err    string   `json:"err,omitempty"`
	Errno  string   `json:"errno,omitempty"`
	Banner string   `json:"banner,omitempty"`
	Ticks  []int64  `json:"ticks,omitempty"` // bytes moved in each 100 ms
	Addrs  []string `json:"addrs,omitempty"`
}

func main() { plugins.Serve(plugins.HandlerFunc(handle)) }

func handle(ctx context.Context, r *plugins.Request) ([]byte, error) {
	var req request
	if err := json.Unmarshal(r.Payload, &req); err != nil {
		return nil, fmt.Errorf("netprobe: payload: %w", err)
	}
	var res result
	switch req.Op {
	case "dial":
		res = dial(req)
	case "send", "recv":
		res = stream(ctx, req)
	case "info":
		res = info()
	default:
		return nil, fmt.Errorf("netprobe: unknown op %q", req.Op)
	}
	return json.Marshal(res)
}

func fail(err error) result {
	res := result{Err: err.Error()}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		res.Errno = unix.ErrnoName(errno)
	} else if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, errTimeout) {
		res.Errno = "TIMEOUT"
	}
	var ne net.Error
	if res.Errno == "" && errors.As(err, &ne) && ne.Timeout() {
		res.Errno = "TIMEOUT"
	}
	return res
}

var errTimeout = errors.New("timeout")

func dial(req request) result {
	buf := make([]byte, 128)
	switch req.Net {
	case "tcp", "unix":
		c, err := net.DialTimeout(req.Net, req.Addr, 2*time.Second)
		if err != nil {
			return fail(err)
		}
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, err := c.Read(buf)
		if err != nil && n == 0 {
			return fail(err)
		}
		return result{OK: true, Banner: string(buf[:n])}
	case "udp":
		c, err := net.Dial("udp", req.Addr) // connect(2): the connect hook
		if err != nil {
			return fail(err)
		}
		defer c.Close()
		if _, err := c.Write([]byte("ping")); err != nil {
			return fail(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, err := c.Read(buf)
		if err != nil {
			return fail(err)
		}
		return result{OK: true, Banner: string(buf[:n])}
	case "udp-sendto":
		c, err := net.ListenPacket("udp4", ":0") // unconnected: the sendmsg hook
		if err != nil {
			return fail(err)
		}
		defer c.Close()
		to, err := net.ResolveUDPAddr("udp4", req.Addr)
		if err != nil {
			return fail(err)
		}
		if _, err := c.WriteTo([]byte("ping"), to); err != nil {
			return fail(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, _, err := c.ReadFrom(buf)
		if err != nil {
			return fail(err)
		}
		return result{OK: true, Banner: string(buf[:n])}
	}
	return result{Err: "unknown net " + req.Net}
}

// stream sends to or reads from a TCP peer for req.Seconds, counting bytes
// per 100 ms.
func stream(ctx context.Context, req request) result {
	c, err := net.DialTimeout("tcp", req.Addr, 2*time.Second)
	if err != nil {
		return fail(err)
	}
	defer c.Close()
	d := time.Duration(req.Seconds * float64(time.Second))
	if d <= 0 || d > 20*time.Second {
		d = 3 * time.Second
	}
	start := time.Now()
	end := start.Add(d)
	ticks := make([]int64, int(d/(100*time.Millisecond))+1)
	buf := make([]byte, 32<<10)
	for time.Now().Before(end) && ctx.Err() == nil {
		_ = c.SetDeadline(time.Now().Add(100 * time.Millisecond))
		var n int
		if req.Op == "send" {
			n, err = c.Write(buf)
		} else {
			n, err = c.Read(buf)
		}
		i := int(time.Since(start) / (100 * time.Millisecond))
		if i < len(ticks) {
			ticks[i] += int64(n)
		}
		var ne net.Error
		if err != nil && !(errors.As(err, &ne) && ne.Timeout()) {
			return result{Err: err.Error(), Ticks: ticks}
		}
	}
	return result{OK: true, Ticks: ticks}
}

func info() result {
	var res result
	ifs, err := net.Interfaces()
	if err != nil {
		return fail(err)
	}
	for _, i := range ifs {
		addrs, _ := i.Addrs()
		for _, a := range addrs {
			res.Addrs = append(res.Addrs, i.Name+" "+a.String())
		}
	}
	res.OK = true
	return res
}
