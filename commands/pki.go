package commands

import (
	"github.com/hsmsh/hsmsh/hsmcore/pki"
)

// PKIKeyTypes are the key types pki init offers.
var PKIKeyTypes = pki.KeyTypes

// InitPKI makes the certificates the nested TLS needs (hsmsh pki init). It
// runs before any cluster exists, so it is a function, not a command of
// the tree.
func InitPKI(dir, keyType, clusterID string, hosts []string) Result {
	res, err := pki.Init(pki.Options{Dir: dir, KeyType: keyType, ClusterID: clusterID, Hosts: hosts})
	if err != nil {
		return failure(err)
	}
	return success(res)
}
