package client

import "github.com/hsmsh/hsmsh/hsmcore/protocol"

// fromMetas points at each key of an answer.
func fromMetas(ws []protocol.KeyMeta) []*protocol.KeyMeta {
	out := make([]*protocol.KeyMeta, len(ws))
	for i := range ws {
		out[i] = &ws[i]
	}
	return out
}
