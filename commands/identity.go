package commands

import (
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/hsmsh/hsmsh/hsmcore"
	"github.com/hsmsh/hsmsh/hsmcore/authsession"
)

// clientIdentity loads this install's identity key for authenticated
// sessions from dataDir/client/identity.pem, making it on first use (mode
// 0600). With no data dir (--ephemeral) the process gets one of its own.
func clientIdentity(dataDir string) (hsmcore.ClientIdentity, error) {
	if dataDir == "" {
		return hsmcore.ClientIdentity{}, nil
	}
	p := filepath.Join(dataDir, "client", "identity.pem")
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		id, err := authsession.NewIdentity()
		if err != nil {
			return hsmcore.ClientIdentity{}, err
		}
		der, err := id.MarshalPrivate()
		if err != nil {
			return hsmcore.ClientIdentity{}, err
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return hsmcore.ClientIdentity{}, err
		}
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return hsmcore.ClientIdentity{}, fmt.Errorf("client identity: %w", err)
		}
		werr := pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: der})
		serr := f.Sync()
		if cerr := f.Close(); werr == nil && serr == nil {
			werr = cerr
		}
		if werr != nil || serr != nil {
			os.Remove(p)
			return hsmcore.ClientIdentity{}, fmt.Errorf("client identity %s: %w", p, errors.Join(werr, serr))
		}
		return hsmcore.ClientIdentity{Key: id}, nil
	}
	if err != nil {
		return hsmcore.ClientIdentity{}, fmt.Errorf("client identity: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return hsmcore.ClientIdentity{}, fmt.Errorf("client identity %s holds no PRIVATE KEY PEM block: move it away to have a new identity made (this install then registers as a new client)", p)
	}
	id, err := authsession.ParseIdentity(blk.Bytes)
	if err != nil {
		return hsmcore.ClientIdentity{}, fmt.Errorf("client identity %s: %w: move it away to have a new identity made", p, err)
	}
	return hsmcore.ClientIdentity{Key: id}, nil
}
