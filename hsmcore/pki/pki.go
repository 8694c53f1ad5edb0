// Package pki makes and reads the certificates of hsmsh's nested TLS
// (SPEC §2): the customer's CA, the default client certificate, the HSM
// server's self-signed certificate, the cluster certificate the customer
// CA issues, and the client's trust folder with OpenSSL subject-hash file
// names.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
	"unicode"
)

// File names in a PKI folder, as CLI.md names them.
const (
	CustomerCACert = "customerCA.crt"
	CustomerCAKey  = "customerCA.key"
	ClientCert     = "client.crt"
	ClientKey      = "client.key"
	ServerCert     = "server.crt"
	ServerKey      = "server.key"
	ClusterCert    = "cluster.crt"
	ClusterKey     = "cluster.key"
	TrustDir       = "certs"
)

// KeyTypes are the key types Init can make. ECDSA P-256 is the default: a
// P-384 handshake costs about 3.5 times the CPU.
var KeyTypes = []string{"ecdsa-p256", "ecdsa-p384", "rsa-2048", "rsa-3072"}

// Options say what Init makes.
type Options struct {
	Dir       string
	KeyType   string   // one of KeyTypes; "" = ecdsa-p256
	ClusterID string   // names the cluster certificate
	Hosts     []string // names and addresses the server certificate is valid for
	Validity  time.Duration
	Now       time.Time // zero: time.Now
}

// Result lists what Init wrote.
type Result struct {
	Dir       string   `json:"dir"`
	KeyType   string   `json:"key-type"`
	Files     []string `json:"files"`
	TrustFile string   `json:"trust-file"`
	Expires   string   `json:"expires"`
}

func newKey(keyType string) (crypto.Signer, error) {
	switch keyType {
	case "", "ecdsa-p256":
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "ecdsa-p384":
		return ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case "rsa-2048":
		return rsa.GenerateKey(rand.Reader, 2048)
	case "rsa-3072":
		return rsa.GenerateKey(rand.Reader, 3072)
	}
	if err := checkKeyType(keyType); err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("key type %q has no generator", keyType)
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic("pki: crypto/rand failed: " + err.Error())
	}
	return n.Add(n, big.NewInt(1))
}

type issued struct {
	cert *x509.Certificate
	der  []byte
	key  crypto.Signer
}

// make issues a certificate from tmpl, signed by parent (nil: self-signed).
func makeCert(keyType string, tmpl *x509.Certificate, parent *issued) (*issued, error) {
	key, err := newKey(keyType)
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial()
	signer, parentCert := key, tmpl
	if parent != nil {
		signer, parentCert = parent.key, parent.cert
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parentCert, key.Public(), signer)
	if err != nil {
		return nil, fmt.Errorf("issue %s: %w", tmpl.Subject.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &issued{cert: cert, der: der, key: key}, nil
}

// Init writes a new PKI into opts.Dir. It never overwrites: an existing
// file is an error, and nothing is written then. The folders it makes
// are mode 0700 (see makePrivateDirs); a PKI made by an older version
// keeps its 0755 folders until its owner runs chmod 700 on them.
func Init(opts Options) (*Result, error) {
	if opts.Dir == "" {
		return nil, errors.New("pki init needs --dir")
	}
	if err := checkKeyType(opts.KeyType); err != nil {
		return nil, err
	}
	now := opts.Now
	if now.IsZero() {
		now = time.Now()
	}
	validity := opts.Validity
	if validity <= 0 {
		validity = 5 * 365 * 24 * time.Hour
	}
	if opts.ClusterID == "" {
		opts.ClusterID = "cluster-local"
	}
	if len(opts.Hosts) == 0 {
		opts.Hosts = []string{"127.0.0.1", "::1", "localhost"}
	}
	for _, f := range []string{CustomerCACert, CustomerCAKey, ClientCert, ClientKey, ServerCert, ServerKey, ClusterCert, ClusterKey} {
		if _, err := os.Stat(filepath.Join(opts.Dir, f)); err == nil {
			return nil, fmt.Errorf("%s already exists: pki init never overwrites certificates or keys; choose an empty --dir", filepath.Join(opts.Dir, f))
		}
	}
	notBefore, notAfter := now.Add(-5*time.Minute), now.Add(validity)
	base := func(cn string) *x509.Certificate {
		return &x509.Certificate{Subject: pkix.Name{CommonName: cn, Organization: []string{"hsmsh"}}, NotBefore: notBefore, NotAfter: notAfter}
	}

	caT := base("hsmsh customer CA")
	caT.IsCA, caT.BasicConstraintsValid = true, true
	caT.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature
	ca, err := makeCert(opts.KeyType, caT, nil)
	if err != nil {
		return nil, err
	}
	// The default client certificate is self-signed, as CloudHSM's is; the
	// server accepts exactly it, or any certificate customerCA issued.
	clT := base("hsmsh default client")
	clT.KeyUsage, clT.ExtKeyUsage = x509.KeyUsageDigitalSignature, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	client, err := makeCert(opts.KeyType, clT, nil)
	if err != nil {
		return nil, err
	}
	svT := base("hsmsh HSM server")
	svT.KeyUsage, svT.ExtKeyUsage = x509.KeyUsageDigitalSignature, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	for _, h := range opts.Hosts {
		if ip := net.ParseIP(h); ip != nil {
			svT.IPAddresses = append(svT.IPAddresses, ip)
		} else {
			svT.DNSNames = append(svT.DNSNames, h)
		}
	}
	server, err := makeCert(opts.KeyType, svT, nil)
	if err != nil {
		return nil, err
	}
	cuT := base("hsmsh cluster " + opts.ClusterID)
	cuT.KeyUsage, cuT.ExtKeyUsage = x509.KeyUsageDigitalSignature, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	cuT.DNSNames = []string{opts.ClusterID}
	cluster, err := makeCert(opts.KeyType, cuT, ca)
	if err != nil {
		return nil, err
	}

	hash, err := SubjectHash(server.cert)
	if err != nil {
		return nil, err
	}
	trustName := fmt.Sprintf("%08x.0", hash)
	if err := makePrivateDirs(opts.Dir); err != nil {
		return nil, err
	}
	res := &Result{Dir: opts.Dir, KeyType: opts.KeyType, TrustFile: filepath.Join(TrustDir, trustName), Expires: notAfter.UTC().Format(time.RFC3339)}
	if res.KeyType == "" {
		res.KeyType = "ecdsa-p256"
	}
	write := func(name string, data []byte, mode os.FileMode) error {
		p := filepath.Join(opts.Dir, name)
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
		if err != nil {
			return err
		}
		if _, err := f.Write(data); err != nil {
			f.Close()
			return err
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return err
		}
		res.Files = append(res.Files, name)
		return f.Close()
	}
	pairs := []struct {
		cert, key string
		c         *issued
	}{{CustomerCACert, CustomerCAKey, ca}, {ClientCert, ClientKey, client}, {ServerCert, ServerKey, server}, {ClusterCert, ClusterKey, cluster}}
	for _, p := range pairs {
		if err := write(p.cert, certPEM(p.c.der), 0o644); err != nil {
			return nil, err
		}
		kp, err := keyPEM(p.c.key)
		if err != nil {
			return nil, err
		}
		if err := write(p.key, kp, 0o600); err != nil {
			return nil, err
		}
	}
	if err := write(res.TrustFile, certPEM(server.der), 0o644); err != nil {
		return nil, err
	}
	return res, nil
}

// makePrivateDirs makes the PKI folder dir and its trust folder mode
// 0700. The PKI folder holds the private keys, and the trust folder
// decides which servers a client believes: other local users have no
// business listing the one or adding to the other (SECURITY.md: secret
// files live in folders of mode 0700). Folders made by older versions
// were 0755.
//
// A trust folder that exists already is tightened: Init is about to fill
// it. The PKI folder is tightened when Init makes it or finds it empty (a
// folder made for the PKI), and left as it is when it holds other files:
// --dir . must not change the mode of the user's working folder.
func makePrivateDirs(dir string) error {
	trust := filepath.Join(dir, TrustDir)
	entries, err := os.ReadDir(dir)
	ours := len(entries) == 0 && (err == nil || errors.Is(err, fs.ErrNotExist))
	if err := os.MkdirAll(trust, 0o700); err != nil {
		return fmt.Errorf("make the PKI folder: %w", err)
	}
	tighten := []string{trust}
	if ours {
		tighten = append(tighten, dir)
	}
	for _, d := range tighten {
		// Also undoes an odd umask, which MkdirAll's mode is subject to.
		if err := os.Chmod(d, 0o700); err != nil {
			return fmt.Errorf("make %s private to its owner (mode 0700): %w", d, err)
		}
	}
	return nil
}

// checkKeyType refuses an unknown key type before anything is generated.
func checkKeyType(t string) error {
	if t == "" || slices.Contains(KeyTypes, t) {
		return nil
	}
	return fmt.Errorf("--key-type %q is not one of %s", t, strings.Join(KeyTypes, ", "))
}

func certPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func keyPEM(k crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// SubjectHash is OpenSSL's subject-name hash (X509_NAME_hash, what
// `openssl x509 -subject_hash` prints and `openssl rehash` names trust
// files by): the first four bytes, little-endian, of the SHA-1 of the
// subject's canonical encoding — each attribute value as a UTF8String,
// lowercased, with leading and trailing space removed and inner runs of
// space folded to one, and the RDN SETs concatenated without the outer
// SEQUENCE.
func SubjectHash(c *x509.Certificate) (uint32, error) {
	var rdns pkix.RDNSequence
	if _, err := asn1.Unmarshal(c.RawSubject, &rdns); err != nil {
		return 0, fmt.Errorf("parse subject: %w", err)
	}
	var canon []byte
	for _, rdn := range rdns {
		var set []byte
		for _, atv := range rdn {
			s, ok := atv.Value.(string)
			if !ok {
				return 0, fmt.Errorf("subject attribute %v is not a string", atv.Type)
			}
			v, err := asn1.MarshalWithParams(canonical(s), "utf8")
			if err != nil {
				return 0, err
			}
			oid, err := asn1.Marshal(atv.Type)
			if err != nil {
				return 0, err
			}
			seq, err := asn1.Marshal(asn1.RawValue{Tag: asn1.TagSequence, Class: asn1.ClassUniversal, IsCompound: true, Bytes: append(oid, v...)})
			if err != nil {
				return 0, err
			}
			set = append(set, seq...)
		}
		enc, err := asn1.Marshal(asn1.RawValue{Tag: asn1.TagSet, Class: asn1.ClassUniversal, IsCompound: true, Bytes: set})
		if err != nil {
			return 0, err
		}
		canon = append(canon, enc...)
	}
	sum := sha1.Sum(canon)
	return binary.LittleEndian.Uint32(sum[:4]), nil
}

// canonical folds a name value as OpenSSL's canonical encoding does.
func canonical(s string) string {
	var b strings.Builder
	space := false
	for _, r := range strings.TrimFunc(s, unicode.IsSpace) {
		if unicode.IsSpace(r) {
			space = true
			continue
		}
		if space {
			b.WriteByte(' ')
			space = false
		}
		if r < 0x80 {
			r = unicode.ToLower(r)
		}
		b.WriteRune(r)
	}
	return b.String()
}
