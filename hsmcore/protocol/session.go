package protocol

import (
	"time"

	"github.com/hsmsh/hsmsh/hsmcore/authsession"
	"google.golang.org/protobuf/proto"
)

// HandshakeArgs is step 1 of the session handshake: the client's hello.
type HandshakeArgs struct {
	Hello     *authsession.Hello `json:"hello"`
	ClientKey []byte             `json:"client_key"` // PKIX DER
	User      string             `json:"user"`
	Lifetime  time.Duration      `json:"lifetime"`
}

// AuthArgs is a login: the password sealed under the new session key.
type AuthArgs struct {
	EKT      []byte               `json:"ekt"`
	Envelope authsession.Envelope `json:"envelope"`
}

// AuthBody is the sealed content of an Authenticate envelope.
type AuthBody struct {
	Password string `json:"password"`
	Role     Role   `json:"role"`
	// Resume is the EKT of the session this login renegotiates (it
	// expired, or an HSM restarted): the session keeps its id, so its
	// session keys stay its own, under the new session key.
	Resume []byte `json:"resume,omitempty"`
	// MFASignature is the signed token-sign MFA token the HSM asked for.
	MFASignature []byte `json:"mfa_signature,omitempty"`
}

// AuthAnswer is the sealed answer to Authenticate.
type AuthAnswer struct {
	OK bool `json:"ok"`
	// Left is how many more wrong passwords lock the user, as this HSM
	// counts them (after a failure); Locked says the user is locked.
	Left   int  `json:"left,omitempty"`
	Locked bool `json:"locked,omitempty"`
	// WasLocked says the user was locked before this attempt, which was
	// not counted.
	WasLocked bool `json:"was_locked,omitempty"`
	// Unknown says this HSM knows no such user (it may be new, and not
	// yet on this HSM); the client tries another.
	Unknown bool   `json:"unknown,omitempty"`
	EKT     []byte `json:"ekt,omitempty"` // the session's token, with the user's role
	// MFAToken asks the client to sign this token with the user's MFA
	// key and send the password again with the signature, in the same
	// session: the password was right.
	MFAToken []byte    `json:"mfa_token,omitempty"`
	Session  string    `json:"session,omitempty"`
	Expires  time.Time `json:"expires,omitempty"`
}

// SessionCall is the sealed content of a command envelope (hsmsh.proto's
// SessionCall: EncodeSessionCall).
type SessionCall struct {
	// HSM is the HSM the command is for, so that an envelope recorded on
	// its way to one HSM cannot be replayed to another, whose window for
	// the session has not seen it.
	HSM    string
	Method string
	// msg is the call's arguments, a message of hsmsh.proto, set by
	// NewSessionCall and read by DecodeArgs.
	msg proto.Message
}

// SessionResult is the sealed answer to a command: its result, or its
// error with the code the client library matches on (hsmsh.proto's
// SessionResult: EncodeSessionResult).
type SessionResult struct {
	Code  string
	Error string
	// msg is the answer, a message of hsmsh.proto, set by
	// NewSessionResult and read by DecodeAnswer.
	msg proto.Message
}
