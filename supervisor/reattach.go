package supervisor

import (
	"encoding/json"
	"os"
	"path/filepath"
)

// reattachInfo is the JSON the daemon publishes for go-plugin clients.
type reattachInfo struct {
	Protocol        string `json:"protocol"`
	ProtocolVersion int    `json:"protocol_version"`
	Network         string `json:"network"`
	Addr            string `json:"addr"`
}

// PublishReattach writes the reattach file (atomically, mode 0644).
func (s *Supervisor) PublishReattach() error {
	path := s.conf().ReattachFile
	if path == "" {
		return nil
	}
	b, err := json.MarshalIndent(reattachInfo{Protocol: "grpc", ProtocolVersion: 1, Network: "unix", Addr: s.conf().Socket}, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return replaceFile(path, append(b, '\n'))
}

// Unpublish removes the reattach file and the socket.
func (s *Supervisor) Unpublish() {
	if p := s.conf().ReattachFile; p != "" {
		_ = os.Remove(p)
	}
	_ = os.Remove(s.conf().Socket)
}
