package nestedtls

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
)

// Files names the PEM files of one side, as the [tls] keys of the config
// name them.
type Files struct {
	TrustDir    string // client: server certificates by subject hash
	ClientCert  string // client: what it shows; server: the default client certificate
	ClientKey   string // client
	CustomerCA  string // both
	ServerCert  string // server
	ServerKey   string // server
	ClusterCert string // server
	ClusterKey  string // server
	ClusterID   string // the name on the cluster certificate
}

func loadPair(cert, key, what string) (tls.Certificate, error) {
	c, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		return c, fmt.Errorf("%s (%s, %s): %w", what, cert, key, err)
	}
	return c, nil
}

func loadCert(path, what string) (*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%s %s holds no PEM certificate", what, path)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", what, path, err)
	}
	return c, nil
}

func loadPool(path, what string) (*x509.CertPool, error) {
	c, err := loadCert(path, what)
	if err != nil {
		return nil, err
	}
	p := x509.NewCertPool()
	p.AddCert(c)
	return p, nil
}

// LoadClient reads a client's files.
func LoadClient(f Files) (ClientConfig, error) {
	var cfg ClientConfig
	var err error
	if cfg.Trust, err = LoadTrustDir(f.TrustDir); err != nil {
		return cfg, err
	}
	if cfg.Certificate, err = loadPair(f.ClientCert, f.ClientKey, "client certificate"); err != nil {
		return cfg, err
	}
	if cfg.CustomerCA, err = loadPool(f.CustomerCA, "customer CA"); err != nil {
		return cfg, err
	}
	cfg.ClusterID = f.ClusterID
	cfg.CustomerCAFile = f.CustomerCA
	return cfg, nil
}

// LoadServer reads a server's files.
func LoadServer(f Files) (ServerConfig, error) {
	var cfg ServerConfig
	var err error
	if cfg.Certificate, err = loadPair(f.ServerCert, f.ServerKey, "server certificate"); err != nil {
		return cfg, err
	}
	if cfg.Cluster, err = loadPair(f.ClusterCert, f.ClusterKey, "cluster certificate"); err != nil {
		return cfg, err
	}
	if cfg.CustomerCA, err = loadPool(f.CustomerCA, "customer CA"); err != nil {
		return cfg, err
	}
	if f.ClientCert != "" {
		if cfg.DefaultClient, err = loadCert(f.ClientCert, "default client certificate"); err != nil {
			return cfg, err
		}
	}
	return cfg, nil
}
