package kubernetes_test

import (
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
	"sigs.k8s.io/yaml"

	"github.com/scoped-io/scoped/supervisor"
)

const namespace = "scoped-system"

// docs reads a file's YAML documents (split at "---" lines; empty ones
// dropped), each as strict JSON: malformed YAML or a duplicate key fails.
func docs(t *testing.T, file string) [][]byte {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for i, d := range strings.Split("\n"+string(b), "\n---\n") {
		j, err := yaml.YAMLToJSONStrict([]byte(d))
		if err != nil {
			t.Fatalf("%s, document %d: %v", file, i, err)
		}
		if string(j) != "null" {
			out = append(out, j)
		}
	}
	return out
}

type meta struct {
	Name      string            `json:"name"`
	Namespace string            `json:"namespace"`
	Labels    map[string]string `json:"labels"`
}

type object struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   meta              `json:"metadata"`
	Data       map[string]string `json:"data"`
	StringData map[string]string `json:"stringData"`
	Resources  []string          `json:"resources"`
}

func decode(t *testing.T, file string, j []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(j, v); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
}

// objects decodes every document of file, each with the given kind and,
// but for a Kustomization, a name in scoped-system.
func objects(t *testing.T, file string, kinds ...string) []object {
	t.Helper()
	var out []object
	for _, j := range docs(t, file) {
		var o object
		decode(t, file, j, &o)
		if !slices.Contains(kinds, o.Kind) || o.APIVersion == "" {
			t.Fatalf("%s: %s %s, want a kind of %v", file, o.APIVersion, o.Kind, kinds)
		}
		if o.Kind != "Kustomization" && (o.Metadata.Name == "" || o.Kind != "Namespace" && o.Metadata.Namespace != namespace) {
			t.Errorf("%s: %s %q in namespace %q", file, o.Kind, o.Metadata.Name, o.Metadata.Namespace)
		}
		out = append(out, o)
	}
	return out
}

type keyPath struct {
	Key  string `json:"key"`
	Path string `json:"path"`
}

type mount struct {
	Name      string `json:"name"`
	MountPath string `json:"mountPath"`
	ReadOnly  bool   `json:"readOnly"`
}

type container struct {
	Name    string   `json:"name"`
	Image   string   `json:"image"`
	Command []string `json:"command"`
	Env     []struct {
		Name      string `json:"name"`
		Value     string `json:"value"`
		ValueFrom *struct {
			FieldRef *struct {
				FieldPath string `json:"fieldPath"`
			} `json:"fieldRef"`
		} `json:"valueFrom"`
	} `json:"env"`
	SecurityContext struct {
		Privileged bool `json:"privileged"`
	} `json:"securityContext"`
	Ports []struct {
		Name          string `json:"name"`
		ContainerPort int    `json:"containerPort"`
		HostPort      int    `json:"hostPort"`
		Protocol      string `json:"protocol"`
	} `json:"ports"`
	Resources struct {
		Requests map[string]string `json:"requests"`
		Limits   map[string]string `json:"limits"`
	} `json:"resources"`
	VolumeMounts []mount `json:"volumeMounts"`
}

type daemonSet struct {
	Metadata meta `json:"metadata"`
	Spec     struct {
		Selector struct {
			MatchLabels map[string]string `json:"matchLabels"`
		} `json:"selector"`
		UpdateStrategy struct {
			RollingUpdate struct {
				MaxUnavailable int `json:"maxUnavailable"`
				MaxSurge       int `json:"maxSurge"`
			} `json:"rollingUpdate"`
		} `json:"updateStrategy"`
		Template struct {
			Metadata meta `json:"metadata"`
			Spec     struct {
				NodeSelector map[string]string `json:"nodeSelector"`
				Tolerations  []struct {
					Key   string `json:"key"`
					Value string `json:"value"`
				} `json:"tolerations"`
				HostNetwork    bool        `json:"hostNetwork"`
				HostPID        bool        `json:"hostPID"`
				InitContainers []container `json:"initContainers"`
				Containers     []container `json:"containers"`
				Volumes        []struct {
					Name     string `json:"name"`
					HostPath *struct {
						Path string `json:"path"`
					} `json:"hostPath"`
					ConfigMap *struct {
						Name  string    `json:"name"`
						Items []keyPath `json:"items"`
					} `json:"configMap"`
					Secret *struct {
						SecretName  string `json:"secretName"`
						DefaultMode int    `json:"defaultMode"`
					} `json:"secret"`
					EmptyDir  *struct{} `json:"emptyDir"`
					Projected *struct {
						DefaultMode int `json:"defaultMode"`
						Sources     []struct {
							Secret *struct {
								Name  string    `json:"name"`
								Items []keyPath `json:"items"`
							} `json:"secret"`
						} `json:"sources"`
					} `json:"projected"`
				} `json:"volumes"`
			} `json:"spec"`
		} `json:"template"`
	} `json:"spec"`
}

func (c *container) env(name string) (value, fieldPath string, ok bool) {
	for _, e := range c.Env {
		if e.Name == name {
			if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
				fieldPath = e.ValueFrom.FieldRef.FieldPath
			}
			return e.Value, fieldPath, true
		}
	}
	return "", "", false
}

// mounted is the volume mounted in c at dir.
func (c *container) mounted(dir string) (string, bool) {
	for _, m := range c.VolumeMounts {
		if m.MountPath == dir {
			return m.Name, true
		}
	}
	return "", false
}

// TestManifests: every file is well-formed YAML of the expected kinds; the
// kustomization lists the files to apply (not the examples).
func TestManifests(t *testing.T) {
	want := map[string][]string{
		"namespace.yaml":              {"Namespace"},
		"configmap.yaml":              {"ConfigMap"},
		"secrets.example.yaml":        {"Secret"},
		"daemonset.yaml":              {"DaemonSet"},
		"daemonset-silo.example.yaml": {"DaemonSet"},
		"kustomization.yaml":          {"Kustomization"},
	}
	files, err := filepath.Glob("*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if want[f] == nil {
			t.Errorf("%s: not checked by this test", f)
		}
	}
	for f, kinds := range want {
		objects(t, f, kinds...)
	}
	k := objects(t, "kustomization.yaml", "Kustomization")[0]
	if !slices.Equal(k.Resources, []string{"namespace.yaml", "configmap.yaml", "daemonset.yaml"}) {
		t.Errorf("kustomization resources: %q", k.Resources)
	}
	if ns := objects(t, "namespace.yaml", "Namespace")[0]; ns.Metadata.Name != namespace ||
		ns.Metadata.Labels["pod-security.kubernetes.io/enforce"] != "privileged" {
		t.Errorf("namespace: %+v", ns.Metadata)
	}
}

// TestDaemonSets: each DaemonSet runs the daemon as a privileged node agent
// with the host's namespaces and directories, renders its configuration
// from the ConfigMap and Secrets that exist, with the node's name and
// address from the downward API, and the rendered configuration loads with
// the daemon's own loader. The silo's differs from the pool's only where
// its comment says.
func TestDaemonSets(t *testing.T) {
	cm := objects(t, "configmap.yaml", "ConfigMap")[0]
	for _, key := range []string{"config.toml", "render.sh"} {
		if cm.Data[key] == "" {
			t.Fatalf("ConfigMap %s has no %s", cm.Metadata.Name, key)
		}
	}
	// The template is TOML before it is rendered.
	var tmpl map[string]any
	if _, err := toml.Decode(cm.Data["config.toml"], &tmpl); err != nil {
		t.Fatalf("ConfigMap config.toml: %v", err)
	}
	secrets := map[string]map[string]string{}
	for _, s := range objects(t, "secrets.example.yaml", "Secret") {
		secrets[s.Metadata.Name] = s.StringData
	}

	for _, file := range []string{"daemonset.yaml", "daemonset-silo.example.yaml"} {
		t.Run(file, func(t *testing.T) {
			var ds daemonSet
			decode(t, file, docs(t, file)[0], &ds)
			checkDaemonSet(t, &ds, cm, secrets)
		})
	}

	// The silo is the pool's DaemonSet but for its name, scoped.io/fleet
	// value and FLEET_LABELS.
	scrub := func(file string) any {
		var v any
		decode(t, file, docs(t, file)[0], &v)
		var walk func(v any) any
		walk = func(v any) any {
			switch v := v.(type) {
			case map[string]any:
				for k, e := range v {
					v[k] = walk(e)
				}
			case []any:
				for i, e := range v {
					v[i] = walk(e)
				}
			case string:
				switch v {
				case "scoped", "scoped-dedicated-acme", "shared", "dedicated-acme", "":
					return "X"
				}
			}
			return v
		}
		return walk(v)
	}
	if pool, silo := scrub("daemonset.yaml"), scrub("daemonset-silo.example.yaml"); !reflect.DeepEqual(pool, silo) {
		t.Error("daemonset-silo.example.yaml differs from daemonset.yaml in more than its name, scoped.io/fleet and FLEET_LABELS")
	}
}

func checkDaemonSet(t *testing.T, ds *daemonSet, cm object, secrets map[string]map[string]string) {
	spec := &ds.Spec.Template.Spec
	if ds.Metadata.Namespace != namespace {
		t.Errorf("namespace %q", ds.Metadata.Namespace)
	}
	for k, v := range ds.Spec.Selector.MatchLabels {
		if ds.Spec.Template.Metadata.Labels[k] != v {
			t.Errorf("selector %s=%s does not select the pods", k, v)
		}
	}
	if u := ds.Spec.UpdateStrategy.RollingUpdate; u.MaxUnavailable != 1 || u.MaxSurge != 0 {
		t.Errorf("rolling update %+v: want one node at a time, no surge", u)
	}
	fleetValue := spec.NodeSelector["scoped.io/fleet"]
	if fleetValue == "" || len(spec.Tolerations) == 0 || spec.Tolerations[0].Key != "scoped.io/fleet" || spec.Tolerations[0].Value != fleetValue {
		t.Errorf("nodeSelector %v, tolerations %+v: want scoped.io/fleet on both", spec.NodeSelector, spec.Tolerations)
	}
	if !spec.HostNetwork || !spec.HostPID {
		t.Error("want hostNetwork and hostPID")
	}
	if len(spec.InitContainers) != 1 || len(spec.Containers) != 1 {
		t.Fatalf("%d init containers, %d containers: want 1 and 1", len(spec.InitContainers), len(spec.Containers))
	}
	init, main := &spec.InitContainers[0], &spec.Containers[0]
	if !main.SecurityContext.Privileged || init.SecurityContext.Privileged {
		t.Error("want the daemon privileged, the renderer not")
	}
	for _, c := range []*container{init, main} {
		if c.Image != main.Image || !reflect.DeepEqual(c.Resources.Requests, c.Resources.Limits) || c.Resources.Limits["memory"] == "" || c.Resources.Limits["cpu"] == "" {
			t.Errorf("container %s: image %q, resources %+v: want the daemon's image, requests = limits (Guaranteed)", c.Name, c.Image, c.Resources)
		}
	}

	volumes := map[string]int{}
	for i, v := range spec.Volumes {
		volumes[v.Name] = i
	}
	// The host's directories, at the same paths.
	for _, dir := range []string{"/sys/fs/cgroup", "/run/scoped", "/var/lib/scoped"} {
		name, ok := main.mounted(dir)
		if i, found := volumes[name]; !ok || !found || spec.Volumes[i].HostPath == nil || spec.Volumes[i].HostPath.Path != dir {
			t.Errorf("%s: not the host's %s", dir, dir)
		}
	}

	// The renderer: sh render.sh TEMPLATE CLIENTS OUT, each from a volume.
	if len(init.Command) != 5 || init.Command[0] != "/bin/sh" {
		t.Fatalf("init command %q: want /bin/sh render.sh TEMPLATE CLIENTS OUT", init.Command)
	}
	script, template, clients, out := init.Command[1], init.Command[2], init.Command[3], init.Command[4]
	name, ok := init.mounted(path.Dir(script))
	if i, found := volumes[name]; !ok || !found || spec.Volumes[i].ConfigMap == nil || spec.Volumes[i].ConfigMap.Name != cm.Metadata.Name ||
		path.Dir(template) != path.Dir(script) || !slices.Contains(spec.Volumes[i].ConfigMap.Items, keyPath{"render.sh", path.Base(script)}) ||
		!slices.Contains(spec.Volumes[i].ConfigMap.Items, keyPath{"config.toml", path.Base(template)}) {
		t.Errorf("%s and %s: not ConfigMap %s's render.sh and config.toml", script, template, cm.Metadata.Name)
	}
	name, ok = init.mounted(path.Dir(clients))
	if i, found := volumes[name]; !ok || !found || spec.Volumes[i].Secret == nil || secrets[spec.Volumes[i].Secret.SecretName][path.Base(clients)] == "" ||
		spec.Volumes[i].Secret.DefaultMode != 0o400 {
		t.Errorf("%s: not a key of a Secret of secrets.example.yaml, mode 0400", clients)
	}
	rendered, ok := init.mounted(path.Dir(out))
	if i, found := volumes[rendered]; !ok || !found || spec.Volumes[i].EmptyDir == nil {
		t.Errorf("%s: not in an emptyDir", out)
	}
	if name, ok := main.mounted(path.Dir(out)); !ok || name != rendered {
		t.Errorf("the daemon does not see %s", out)
	}
	if i := slices.Index(main.Command, "--config"); i < 0 || i+1 >= len(main.Command) || main.Command[i+1] != out {
		t.Errorf("daemon command %q: want --config %s", main.Command, out)
	}

	// The node's name and address from the downward API.
	for env, field := range map[string]string{"NODE_NAME": "spec.nodeName", "HOST_IP": "status.hostIP"} {
		if _, f, _ := init.env(env); f != field {
			t.Errorf("init env %s: from %q, want %s", env, f, field)
		}
	}
	labels, _, ok := init.env("FLEET_LABELS")
	if !ok {
		t.Fatal("init env FLEET_LABELS missing")
	}

	// The TLS files: the projected Secrets' keys, in the daemon's mount.
	tlsFiles := map[string]bool{}
	for _, v := range spec.Volumes {
		if v.Projected == nil {
			continue
		}
		if v.Projected.DefaultMode != 0o400 {
			t.Errorf("volume %s: mode %#o, want 0400", v.Name, v.Projected.DefaultMode)
		}
		dir, ok := "", false
		for _, m := range main.VolumeMounts {
			if m.Name == v.Name {
				dir, ok = m.MountPath, m.ReadOnly
			}
		}
		if !ok {
			t.Errorf("volume %s: not mounted read-only in the daemon", v.Name)
		}
		for _, s := range v.Projected.Sources {
			for _, it := range s.Secret.Items {
				if secrets[s.Secret.Name][it.Key] == "" {
					t.Errorf("Secret %s has no key %s", s.Secret.Name, it.Key)
				}
				tlsFiles[path.Join(dir, it.Path)] = true
			}
		}
	}

	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh to run render.sh")
	}
	dir := t.TempDir()
	files := map[string]string{"render.sh": cm.Data["render.sh"], "config.toml": cm.Data["config.toml"],
		"clients.toml": secrets["scoped-clients"]["clients.toml"]}
	for f, text := range files {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	render := func(nodeName, hostIP, labels string) (string, error) {
		cmd := exec.Command(sh, filepath.Join(dir, "render.sh"), filepath.Join(dir, "config.toml"), filepath.Join(dir, "clients.toml"), filepath.Join(dir, "out.toml"))
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "NODE_NAME=" + nodeName, "HOST_IP=" + hostIP, "FLEET_LABELS=" + labels}
		b, err := cmd.CombinedOutput()
		return string(b), err
	}
	if msg, err := render("ip-10-0-1-7.eu-west-1.compute.internal", "10.0.1.7", labels); err != nil {
		t.Fatalf("render.sh: %v\n%s", err, msg)
	}
	outFile := filepath.Join(dir, "out.toml")
	if fi, err := os.Stat(outFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("rendered config: %v, mode %v: want 0600", err, fi.Mode())
	}
	c, err := supervisor.LoadConfig(outFile)
	if err != nil {
		t.Fatalf("rendered config: %v", err)
	}
	f := c.Fleet
	_, port, _ := net.SplitHostPort(f.Listen)
	if f.Node != "ip-10-0-1-7" || f.Advertise != "10.0.1.7:"+port || !slices.Equal(f.Labels, strings.FieldsFunc(labels, func(r rune) bool { return r == ',' })) {
		t.Errorf("rendered [fleet]: node %q, advertise %q, labels %q", f.Node, f.Advertise, f.Labels)
	}
	if len(main.Ports) != 1 || strconv.Itoa(main.Ports[0].ContainerPort) != port || main.Ports[0].HostPort != main.Ports[0].ContainerPort {
		t.Errorf("ports %+v: want the listen port %s, hostPort = containerPort", main.Ports, port)
	}
	if f.PeerServerName == "" {
		t.Error("rendered [fleet] has no peer_server_name: one shared certificate would need every node's IP")
	}
	if len(c.Clients) != 2 {
		t.Errorf("rendered clients: %+v", c.Clients)
	}
	for key, p := range map[string]string{"etcd_ca": f.EtcdCA, "etcd_cert": f.EtcdCert, "etcd_key": f.EtcdKey,
		"tls_ca": f.TLSCA, "tls_cert": f.TLSCert, "tls_key": f.TLSKey} {
		if !tlsFiles[p] {
			t.Errorf("fleet.%s = %s: no Secret key is mounted there", key, p)
		}
	}
	for _, p := range []struct{ dir, v string }{{"/run/scoped", c.RuntimeDir}, {"/var/lib/scoped", c.StateDir}} {
		if p.v != p.dir {
			t.Errorf("the configuration's directory %s is not the host's %s", p.v, p.dir)
		}
	}

	// An IPv6 node address is bracketed; bad names and labels are refused.
	if msg, err := render("node-6", "fd00::6", labels); err != nil {
		t.Fatalf("render.sh with IPv6: %v\n%s", err, msg)
	}
	if c, err := supervisor.LoadConfig(outFile); err != nil || c.Fleet.Advertise != "[fd00::6]:"+port {
		t.Errorf("IPv6: %v, advertise %q", err, c.Fleet.Advertise)
	}
	for _, bad := range [][3]string{{"Node_1", "10.0.0.1", ""}, {"n1", "10.0.0.1; rm", ""}, {"n1", "10.0.0.1", `a"]`}, {"n1", "10.0.0.1", "a,,b"}, {"n1", "", ""}} {
		if msg, err := render(bad[0], bad[1], bad[2]); err == nil {
			t.Errorf("render.sh %q: no error\n%s", bad, msg)
		}
	}
}
