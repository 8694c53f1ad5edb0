package config

import (
	"errors"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

const clustersFile = `[cluster]
id = "main"
hsms = 4

[[clusters]]
id = "lab"
hsms = 2
transport = "tls"

[[clusters]]
id = "prod"
mode = "remote"

[[clusters.servers]]
id = "hsm-1"
address = "10.0.0.1:2223"

[[clusters.servers]]
id = "hsm-2"
address = "10.0.0.2:2223"
`

func TestLoadClusters(t *testing.T) {
	tests := []struct {
		name    string
		content string
		main    Cluster
		more    []Cluster
	}{
		{"cluster and two more", clustersFile,
			Cluster{ID: "main", Mode: "embedded", HSMs: 4, Transport: "direct", Profile: "none"},
			[]Cluster{
				{ID: "lab", Mode: "embedded", HSMs: 2, Transport: "tls", Profile: "none"},
				{ID: "prod", Mode: "remote", HSMs: 3, Transport: "direct", Profile: "none", Servers: []Server{
					{ID: "hsm-1", Address: "10.0.0.1:2223"},
					{ID: "hsm-2", Address: "10.0.0.2:2223"},
				}},
			}},
		{"no clusters", "[cluster]\nid = \"main\"\n",
			Cluster{ID: "main", Mode: "embedded", HSMs: 3, Transport: "direct", Profile: "none"}, nil},
		{"only clusters, defaults for the rest", "[[clusters]]\nid = \"lab\"\n",
			defaultCluster(),
			[]Cluster{{ID: "lab", Mode: "embedded", HSMs: 3, Transport: "direct", Profile: "none"}}},
		{"clusters before cluster in the file", "[[clusters]]\nid = \"lab\"\n\n[cluster]\nid = \"main\"\n",
			Cluster{ID: "main", Mode: "embedded", HSMs: 3, Transport: "direct", Profile: "none"},
			[]Cluster{{ID: "lab", Mode: "embedded", HSMs: 3, Transport: "direct", Profile: "none"}}},
		{"server ids are per cluster",
			"[cluster]\nmode = \"remote\"\n[[cluster.servers]]\nid = \"hsm-1\"\naddress = \"a:1\"\n" +
				"[[clusters]]\nid = \"b\"\nmode = \"remote\"\n[[clusters.servers]]\nid = \"hsm-1\"\naddress = \"b:1\"\n",
			Cluster{ID: "cluster-local", Mode: "remote", HSMs: 3, Transport: "direct", Profile: "none", Servers: []Server{{ID: "hsm-1", Address: "a:1"}}},
			[]Cluster{{ID: "b", Mode: "remote", HSMs: 3, Transport: "direct", Profile: "none", Servers: []Server{{ID: "hsm-1", Address: "b:1"}}}}},
		{"inline array of tables", "clusters = [{id = \"a\", hsms = 1}, {id = \"b\", transport = \"tls\"}]\n",
			defaultCluster(),
			[]Cluster{
				{ID: "a", Mode: "embedded", HSMs: 1, Transport: "direct", Profile: "none"},
				{ID: "b", Mode: "embedded", HSMs: 3, Transport: "tls", Profile: "none"},
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Load(writeConfig(t, tt.content), true, nil)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(c.Cluster, tt.main) {
				t.Errorf("Cluster = %+v\nwant %+v", c.Cluster, tt.main)
			}
			if !reflect.DeepEqual(c.Clusters, tt.more) {
				t.Errorf("Clusters = %+v\nwant %+v", c.Clusters, tt.more)
			}
		})
	}
}

func TestClusterIDs(t *testing.T) {
	c, err := Load(writeConfig(t, clustersFile), true, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.ClusterIDs(), []string{"main", "lab", "prod"}; !reflect.DeepEqual(got, want) {
		t.Errorf("ClusterIDs() = %q, want %q", got, want)
	}
	if got, want := Default().ClusterIDs(), []string{"cluster-local"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Default().ClusterIDs() = %q, want %q", got, want)
	}
}

func TestClusterByID(t *testing.T) {
	c, err := Load(writeConfig(t, clustersFile), true, nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		id   string
		want Cluster
		ok   bool
	}{
		{"main", c.Cluster, true},
		{"lab", c.Clusters[0], true},
		{"prod", c.Clusters[1], true},
		{"nope", Cluster{}, false},
		{"", Cluster{}, false},
	}
	for _, tt := range tests {
		got, ok := c.ClusterByID(tt.id)
		if ok != tt.ok || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ClusterByID(%q) = %+v, %v; want %+v, %v", tt.id, got, ok, tt.want, tt.ok)
		}
	}
	if got, _ := c.ClusterByID("prod"); got.Mode != "remote" || len(got.Servers) != 2 {
		t.Errorf(`ClusterByID("prod") = %+v, want the remote cluster with two servers`, got)
	}
}

func TestLoadClustersErrors(t *testing.T) {
	tests := []struct {
		name    string
		content string
		line    int
		key     string
		msg     string
		partial bool // msg is only the start of the message
	}{
		{"missing id", "[[clusters]]\nhsms = 2\n",
			1, "clusters[0]", `cluster has no id; add id = "cluster-2" (or any id no other cluster uses) to this [[clusters]] table`, false},
		{"bad id", "[[clusters]]\nid = \"my lab\"\n",
			2, "clusters[0].id", `"my lab" is not a valid id (use 1 to 64 letters, digits, '_', '.' or '-')`, false},
		{"bad mode", "[[clusters]]\nid = \"lab\"\nmode = \"cloud\"\n",
			3, "clusters[0].mode", `"cloud" is not a mode (use "embedded" or "remote")`, false},
		{"bad transport", "[[clusters]]\nid = \"lab\"\ntransport = \"udp\"\n",
			3, "clusters[0].transport", `"udp" is not a transport (use "direct" for in-process calls, the default, or "tls" for nested TLS to the in-process HSMs over in-memory pipes)`, false},
		{"hsms too high", "[[clusters]]\nid = \"a\"\n[[clusters]]\nid = \"b\"\nhsms = 29\n",
			5, "clusters[1].hsms", "29 is out of range (1..28)", false},
		{"hsms zero", "[[clusters]]\nid = \"a\"\nhsms = 0\n",
			3, "clusters[0].hsms", "0 is out of range (1..28)", false},
		{"wrong type for hsms", "[[clusters]]\nid = \"a\"\nhsms = \"two\"\n",
			3, "clusters[0].hsms", `must be an integer, got string "two"`, false},
		{"wrong type for id", "[[clusters]]\nid = 7\n",
			2, "clusters[0].id", "must be a string, got integer 7", false},
		{"unknown key", "[[clusters]]\nid = \"a\"\nhsm = 2\n",
			3, "clusters[0].hsm", "unknown key (known keys in [[clusters]]: hsms, id, mode, profile, servers, transport)", false},
		{"not an array of tables", "clusters = 5\n",
			1, "clusters", "must be an array of tables ([[clusters]]), got integer 5", false},
		{"a table, not an array of tables", "[clusters]\nid = \"a\"\n",
			1, "clusters", "must be an array of tables ([[clusters]]), got a table", false},
		{"duplicate id with cluster", "[cluster]\nid = \"main\"\n\n[[clusters]]\nid = \"main\"\n",
			5, "clusters[0].id", `duplicate cluster id "main" (also used at line 2); give each cluster its own id`, false},
		{"duplicate id with cluster later in the file", "[[clusters]]\nid = \"main\"\n\n[cluster]\nid = \"main\"\n",
			2, "clusters[0].id", `duplicate cluster id "main" (also used at line 5); give each cluster its own id`, false},
		{"duplicate id with the default cluster id", "[[clusters]]\nid = \"cluster-local\"\n",
			2, "clusters[0].id", `duplicate cluster id "cluster-local" (the default id of the [cluster] table); give each cluster its own id, or set another id in [cluster]`, false},
		{"duplicate id between clusters", "[[clusters]]\nid = \"lab\"\n\n[[clusters]]\nid = \"lab\"\nhsms = 1\n",
			5, "clusters[1].id", `duplicate cluster id "lab" (also used at line 2); give each cluster its own id`, false},
		{"remote without servers", "[[clusters]]\nid = \"prod\"\nmode = \"remote\"\n",
			3, "clusters[0].mode", `mode "remote" needs servers; add [[clusters.servers]] tables with id and address after this [[clusters]] table, or use mode "embedded"`, false},
		{"remote with an empty server list", "[[clusters]]\nid = \"prod\"\nmode = \"remote\"\nservers = []\n",
			3, "clusters[0].mode", `mode "remote" needs servers; add [[clusters.servers]] tables`, true},
		{"bad server address", "[[clusters]]\nid = \"lab\"\n[[clusters]]\nid = \"prod\"\nmode = \"remote\"\n[[clusters.servers]]\nid = \"hsm-1\"\naddress = \"10.0.0.1\"\n",
			8, "clusters[1].servers[0].address", `"10.0.0.1" is not a host:port address (address 10.0.0.1: missing port in address); use for example "10.0.0.5:2223"`, false},
		{"server without address", "[[clusters]]\nid = \"prod\"\nmode = \"remote\"\n[[clusters.servers]]\nid = \"hsm-1\"\n",
			4, "clusters[0].servers[0]", `server has no address; add address = "HOST:PORT" to this [[clusters.servers]] table`, false},
		{"server unknown key", "[[clusters]]\nid = \"prod\"\n[[clusters.servers]]\nid = \"hsm-1\"\naddress = \"h:1\"\nport = 1\n",
			6, "clusters[0].servers[0].port", "unknown key (known keys in [[clusters.servers]]: address, id)", false},
		{"duplicate server ids", "[[clusters]]\nid = \"prod\"\nmode = \"remote\"\n[[clusters.servers]]\nid = \"hsm-1\"\naddress = \"a:1\"\n[[clusters.servers]]\nid = \"hsm-1\"\naddress = \"b:1\"\n",
			8, "clusters[0].servers[1].id", `duplicate server id "hsm-1" (also used at line 5); give each server its own id`, false},
		{"servers not tables", "[[clusters]]\nid = \"prod\"\nservers = 5\n",
			3, "clusters[0].servers", "must be an array of tables ([[clusters.servers]]), got integer 5", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeConfig(t, tt.content)
			_, err := Load(path, true, nil)
			if err == nil {
				t.Fatalf("Load succeeded, want error %q", tt.msg)
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error = %q (%T), want one *Error", err, err)
			}
			want := path + ":" + strconv.Itoa(tt.line) + ": " + tt.key + ": " + tt.msg
			if got := err.Error(); got != want && !(tt.partial && strings.HasPrefix(got, want)) {
				t.Errorf("error = %q\nwant  %q", got, want)
			}
		})
	}
}

func TestLoadClustersReportsEveryError(t *testing.T) {
	// A bad key does not hide the missing servers of the same entry.
	path := writeConfig(t, "[[clusters]]\nid = \"prod\"\nmode = \"remote\"\nhsms = 0\n")
	_, err := Load(path, true, nil)
	if err == nil {
		t.Fatal("Load succeeded, want errors")
	}
	want := path + ":3: clusters[0].mode: mode \"remote\" needs servers; add [[clusters.servers]] tables with id and address after this [[clusters]] table, or use mode \"embedded\"\n" +
		path + ":4: clusters[0].hsms: 0 is out of range (1..28)"
	if err.Error() != want {
		t.Errorf("error = %q\nwant  %q", err, want)
	}
}

func TestClusterIDFromEnvClashes(t *testing.T) {
	path := writeConfig(t, clustersFile)
	_, err := Load(path, true, env(map[string]string{"HSMSH_CLUSTER_ID": "prod"}))
	want := `HSMSH_CLUSTER_ID: cluster id "prod" is also the id of the [[clusters]] table at ` + path + `:11; give each cluster its own id`
	if err == nil || err.Error() != want {
		t.Errorf("error = %v\nwant  %s", err, want)
	}
	if _, err := Load(path, true, env(map[string]string{"HSMSH_CLUSTER_ID": "other"})); err != nil {
		t.Errorf("Load with a fresh id: %v", err)
	}
}

func TestSetClusterIDClashes(t *testing.T) {
	c, err := Load(writeConfig(t, clustersFile), true, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = c.Set("cluster.id", "lab", SourceFlag)
	want := `cluster.id: "lab" is already the id of a [[clusters]] table; give each cluster its own id`
	if err == nil || err.Error() != want {
		t.Errorf("Set(cluster.id, lab) = %v, want %s", err, want)
	}
	if c.Cluster.ID != "main" {
		t.Errorf("after the refused Set, Cluster.ID = %q, want main", c.Cluster.ID)
	}
	if err := c.Set("cluster.id", "other", SourceFlag); err != nil || c.Cluster.ID != "other" {
		t.Errorf("Set(cluster.id, other) = %v, Cluster.ID = %q", err, c.Cluster.ID)
	}
}

func TestCloneClusters(t *testing.T) {
	c, err := Load(writeConfig(t, clustersFile), true, nil)
	if err != nil {
		t.Fatal(err)
	}
	d := c.Clone()
	if !reflect.DeepEqual(d.Clusters, c.Clusters) {
		t.Fatalf("Clone().Clusters = %+v, want %+v", d.Clusters, c.Clusters)
	}
	d.Clusters[0].HSMs = 9
	d.Clusters[1].Servers[0].Address = "changed:1"
	if c.Clusters[0].HSMs != 2 || c.Clusters[1].Servers[0].Address != "10.0.0.1:2223" {
		t.Errorf("changing the clone changed the original: %+v", c.Clusters)
	}
}
