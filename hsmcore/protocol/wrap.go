package protocol

// Key wrap and unwrap, as CloudHSM CLI's key wrap and key unwrap do them:
// the HSM wraps one of its keys under another and hands out only the
// wrapped bytes; unwrapping makes a new key inside the HSM from wrapped
// bytes a user brings.

// The wrapping mechanisms, by CloudHSM CLI's names.
const (
	WrapAESGCM         = "aes-gcm"          // AES-GCM; the HSM draws the IV and returns it
	WrapCloudHSMAESGCM = "cloudhsm-aes-gcm" // AES-GCM with the IV in front of the data
	WrapAESNoPad       = "aes-no-pad"       // RFC 3394 AES key wrap
	WrapAESPKCS5Pad    = "aes-pkcs5-pad"    // RFC 3394 after PKCS #5 padding
	WrapAESZeroPad     = "aes-zero-pad"     // RFC 3394 after zero padding
	WrapRSAAES         = "rsa-aes"          // an AES key under RSA-OAEP, the payload under it with RFC 5649
	WrapRSAOAEP        = "rsa-oaep"         // RSA-OAEP
	WrapRSAPKCS        = "rsa-pkcs"         // RSA PKCS #1 v1.5
)

// WrapMechanisms lists the mechanisms, in CloudHSM CLI's order.
var WrapMechanisms = []string{WrapAESGCM, WrapAESNoPad, WrapAESPKCS5Pad, WrapAESZeroPad, WrapCloudHSMAESGCM, WrapRSAAES, WrapRSAOAEP, WrapRSAPKCS}

// WrapParams are a mechanism's parameters: AES-GCM's tag length, AAD and
// (to unwrap) IV; the RSA mechanisms' hash and mask generation function.
type WrapParams struct {
	Mechanism     string `json:"mechanism"`
	TagLengthBits int    `json:"tag_length_bits,omitempty"`
	AAD           []byte `json:"aad,omitempty"`
	IV            []byte `json:"iv,omitempty"`
	Hash          string `json:"hash,omitempty"` // sha1 … sha512
	MGF           string `json:"mgf,omitempty"`  // mgf1-sha1 … mgf1-sha512
}

// WrapArgs asks an HSM to wrap the payload key under the wrapping key.
// Each key under a manage quorum takes its approval, checked here.
type WrapArgs struct {
	Params           WrapParams `json:"params"`
	Payload          Ref        `json:"payload"`
	Wrapping         Ref        `json:"wrapping"`
	PayloadApproval  *Approval  `json:"payload_approval,omitempty"`
	WrappingApproval *Approval  `json:"wrapping_approval,omitempty"`
}

// WrapReply is the wrapped key: Data, and for aes-gcm the IV the HSM drew.
type WrapReply struct {
	IV   []byte `json:"iv,omitempty"`
	Data []byte `json:"data"`
}

// UnwrapSpec says which key to make from wrapped data, and how.
type UnwrapSpec struct {
	Params     WrapParams `json:"params"`
	Unwrapping Ref        `json:"unwrapping"`
	Data       []byte     `json:"data"`
	// KeyTypeClass is what the data holds: aes, generic-secret,
	// ec-private or rsa-private.
	KeyTypeClass string            `json:"key_type_class"`
	Label        string            `json:"label"`
	Attributes   map[string]string `json:"attributes,omitempty"`
	Session      bool              `json:"session,omitempty"`
	ShareWith    []string          `json:"share_with,omitempty"`
	UseQuorum    int               `json:"use_quorum,omitempty"`
	ManageQuorum int               `json:"manage_quorum,omitempty"`
	// MinServers is hsmsh's --min-srv, as for key generation.
	MinServers int       `json:"min_servers,omitempty"`
	Approval   *Approval `json:"approval,omitempty"` // the unwrapping key's manage quorum
}

// UnwrapArgs asks an HSM to make a key from wrapped data under Ref; Wrap
// asks for it wrapped under the domain key as well, for client-side sync.
type UnwrapArgs struct {
	Spec UnwrapSpec `json:"spec"`
	Ref  Ref        `json:"ref"`
	Wrap bool       `json:"wrap,omitempty"`
}
