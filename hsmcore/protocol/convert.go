package protocol

import (
	"crypto"
	"errors"
	"fmt"
	"math"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/hsmsh/hsmsh/hsmcore/authsession"
	"github.com/hsmsh/hsmsh/hsmcore/protocol/pb"
)

// The Go types of the calls (calls.go and the rest of the package) and
// their messages in hsmsh.proto, converted field by field both ways.
// Converting to a message fails on a Go value the message cannot hold
// (a time outside years 1–9999, a nil element of a list; a string that is
// not UTF-8 fails when the message is marshalled); converting from one
// fails on a number out of its Go type's range. Nothing is dropped
// quietly: a test fills every field of every type and reads it back.

// check gathers the first error of a conversion, so that a converter
// reads as one line per field.
type check struct{ err error }

func (c *check) fail(field string, err error) {
	if c.err == nil {
		c.err = fmt.Errorf("%s: %w", field, err)
	}
}

// int is v as a Go int, which JSON also refused to overflow.
func (c *check) int(field string, v int64) int {
	if int64(int(v)) != v {
		c.fail(field, fmt.Errorf("%d is out of range", v))
		return 0
	}
	return int(v)
}

// timestamp is t as a Timestamp; the zero time is none.
func (c *check) timestamp(field string, t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	ts := timestamppb.New(t)
	if err := ts.CheckValid(); err != nil {
		c.fail(field, err)
		return nil
	}
	return ts
}

// time is ts as a time.Time in UTC; none is the zero time.
func (c *check) time(field string, ts *timestamppb.Timestamp) time.Time {
	if ts == nil {
		return time.Time{}
	}
	if err := ts.CheckValid(); err != nil {
		c.fail(field, err)
		return time.Time{}
	}
	if t := ts.AsTime(); !t.IsZero() {
		return t
	}
	return time.Time{} // year 1 spelled out: the zero time, without a location
}

// ints converts a map of Go ints to the message's, and back.
func intsPB(m map[string]int) map[string]int64 {
	if m == nil {
		return nil
	}
	out := make(map[string]int64, len(m))
	for k, v := range m {
		out[k] = int64(v)
	}
	return out
}

func (c *check) ints(field string, m map[string]int64) map[string]int {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]int, len(m))
	for k, v := range m {
		out[k] = c.int(field+"["+k+"]", v)
	}
	return out
}

func approvalPB(a *Approval) *pb.Approval {
	if a == nil {
		return nil
	}
	return &pb.Approval{Token: a.Token, Command: a.Command}
}

func approvalOf(m *pb.Approval) *Approval {
	if m == nil {
		return nil
	}
	return &Approval{Token: m.Token, Command: m.Command}
}

func refPB(r *Ref) *uint64 {
	if r == nil {
		return nil
	}
	v := uint64(*r)
	return &v
}

func refOf(v *uint64) *Ref {
	if v == nil {
		return nil
	}
	r := Ref(*v)
	return &r
}

// ---- Key use ----

func (c *check) signRequestPB(r *SignRequest) *pb.SignRequest {
	if uint64(r.Hash) > math.MaxUint32 {
		c.fail("hash", fmt.Errorf("%d is out of range", uint64(r.Hash)))
	}
	return &pb.SignRequest{Ref: uint64(r.Ref), Mechanism: string(r.Mechanism), Hash: uint32(r.Hash),
		Data: r.Data, Digest: r.Digest, SaltLength: int64(r.SaltLength)}
}

func signRequestOf(m *pb.SignRequest) (SignRequest, error) {
	if m == nil {
		return SignRequest{}, errors.New("no sign request")
	}
	if m.SaltLength < 0 || m.SaltLength > math.MaxInt32 {
		return SignRequest{}, fmt.Errorf("PSS salt length %d is out of range", m.SaltLength)
	}
	return SignRequest{Ref: Ref(m.Ref), Mechanism: Mechanism(m.Mechanism), Hash: crypto.Hash(m.Hash),
		Data: m.Data, Digest: m.Digest, SaltLength: int(m.SaltLength)}, nil
}

func signArgsPB(a SignArgs) (*pb.SignArgs, error) {
	var c check
	m := &pb.SignArgs{Req: c.signRequestPB(&a.Req), Approval: approvalPB(a.Approval)}
	return m, c.err
}

func signArgsOf(m *pb.SignArgs) (SignArgs, error) {
	req, err := signRequestOf(m.Req)
	return SignArgs{Req: req, Approval: approvalOf(m.Approval)}, err
}

func verifyArgsPB(a VerifyArgs) (*pb.VerifyArgs, error) {
	var c check
	m := &pb.VerifyArgs{Req: c.signRequestPB(&a.Req), Sig: a.Sig}
	return m, c.err
}

func verifyArgsOf(m *pb.VerifyArgs) (VerifyArgs, error) {
	req, err := signRequestOf(m.Req)
	return VerifyArgs{Req: req, Sig: m.Sig}, err
}

// ---- Keys ----

func attributesPB(a *Attributes) *pb.Attributes {
	return &pb.Attributes{KeyType: a.KeyType, Label: a.Label, Id: a.ID, CheckValue: a.CheckValue, Class: a.Class,
		Encrypt: a.Encrypt, Decrypt: a.Decrypt, Token: a.Token, AlwaysSensitive: a.AlwaysSensitive, Derive: a.Derive,
		Destroyable: a.Destroyable, Extractable: a.Extractable, Local: a.Local, Modifiable: a.Modifiable,
		NeverExtractable: a.NeverExtractable, Private: a.Private, MldsaAlgorithm: a.MLDSAAlgorithm,
		Sensitive: a.Sensitive, Sign: a.Sign, Trusted: a.Trusted, Unwrap: a.Unwrap, Verify: a.Verify, Wrap: a.Wrap,
		WrapWithTrusted: a.WrapWithTrusted, KeyLengthBytes: int64(a.KeyLengthBytes), EcPoint: a.ECPoint,
		Curve: a.Curve, PublicExponent: a.PublicExponent, Modulus: a.Modulus, ModulusSizeBits: int64(a.ModulusSizeBits)}
}

func (c *check) attributes(m *pb.Attributes) Attributes {
	return Attributes{KeyType: m.GetKeyType(), Label: m.GetLabel(), ID: m.GetId(), CheckValue: m.GetCheckValue(), Class: m.GetClass(),
		Encrypt: m.GetEncrypt(), Decrypt: m.GetDecrypt(), Token: m.GetToken(), AlwaysSensitive: m.GetAlwaysSensitive(), Derive: m.GetDerive(),
		Destroyable: m.GetDestroyable(), Extractable: m.GetExtractable(), Local: m.GetLocal(), Modifiable: m.GetModifiable(),
		NeverExtractable: m.GetNeverExtractable(), Private: m.GetPrivate(), MLDSAAlgorithm: m.GetMldsaAlgorithm(),
		Sensitive: m.GetSensitive(), Sign: m.GetSign(), Trusted: m.GetTrusted(), Unwrap: m.GetUnwrap(), Verify: m.GetVerify(), Wrap: m.GetWrap(),
		WrapWithTrusted: m.GetWrapWithTrusted(), KeyLengthBytes: c.int("key_length_bytes", m.GetKeyLengthBytes()), ECPoint: m.GetEcPoint(),
		Curve: m.GetCurve(), PublicExponent: m.GetPublicExponent(), Modulus: m.GetModulus(),
		ModulusSizeBits: c.int("modulus_size_bits", m.GetModulusSizeBits())}
}

func (c *check) keyMetaPB(k *KeyMeta) *pb.KeyMeta {
	return &pb.KeyMeta{Ref: uint64(k.Ref), Attributes: attributesPB(&k.Attrs), Owner: k.Owner, Shared: k.Shared,
		UseQuorum: int64(k.UseQuorum), ManageQuorum: int64(k.ManageQuorum), Created: c.timestamp("created", k.Created),
		Session: k.Session}
}

func (c *check) keyMeta(m *pb.KeyMeta) KeyMeta {
	return KeyMeta{Ref: Ref(m.GetRef()), Attrs: c.attributes(m.GetAttributes()), Owner: m.GetOwner(), Shared: m.GetShared(),
		UseQuorum: c.int("use_quorum", m.GetUseQuorum()), ManageQuorum: c.int("manage_quorum", m.GetManageQuorum()),
		Created: c.time("created", m.GetCreated()), Session: m.GetSession()}
}

func (c *check) keyMetasPB(ks []KeyMeta) []*pb.KeyMeta {
	if len(ks) == 0 {
		return nil
	}
	out := make([]*pb.KeyMeta, len(ks))
	for i := range ks {
		out[i] = c.keyMetaPB(&ks[i])
	}
	return out
}

func (c *check) keyMetas(ms []*pb.KeyMeta) []KeyMeta {
	if len(ms) == 0 {
		return nil
	}
	out := make([]KeyMeta, len(ms))
	for i, m := range ms {
		out[i] = c.keyMeta(m)
	}
	return out
}

func keyMetaPB(k KeyMeta) (*pb.KeyMeta, error) {
	var c check
	m := c.keyMetaPB(&k)
	return m, c.err
}

func keyMetaOf(m *pb.KeyMeta) (KeyMeta, error) {
	var c check
	k := c.keyMeta(m)
	return k, c.err
}

func snapshotArgsPB(a SnapshotArgs) (*pb.SnapshotArgs, error) {
	return &pb.SnapshotArgs{Filter: &pb.Filter{Ref: refPB(a.Filter.Ref), Attrs: a.Filter.Attrs}, After: uint64(a.After)}, nil
}

func snapshotArgsOf(m *pb.SnapshotArgs) (SnapshotArgs, error) {
	a := SnapshotArgs{After: Ref(m.After)}
	if f := m.Filter; f != nil {
		a.Filter = Filter{Ref: refOf(f.Ref), Attrs: f.Attrs}
	}
	return a, nil
}

func snapshotReplyPB(r SnapshotReply) (*pb.SnapshotReply, error) {
	var c check
	m := &pb.SnapshotReply{Keys: c.keyMetasPB(r.Keys), More: r.More}
	return m, c.err
}

func snapshotReplyOf(m *pb.SnapshotReply) (SnapshotReply, error) {
	var c check
	r := SnapshotReply{Keys: c.keyMetas(m.Keys), More: m.More}
	return r, c.err
}

func keySpecPB(s *KeySpec) *pb.KeySpec {
	return &pb.KeySpec{Type: s.Type, Label: s.Label, PublicLabel: s.PublicLabel, PrivateLabel: s.PrivateLabel,
		LengthBytes: int64(s.LengthBytes), Curve: s.Curve, ModulusBits: int64(s.ModulusBits), Exponent: int64(s.Exponent),
		MldsaParams: s.MLDSAParams, Session: s.Session, Attributes: s.Attributes, PublicAttributes: s.PublicAttributes,
		PrivateAttributes: s.PrivateAttributes, ShareWith: s.ShareWith, MinServers: int64(s.MinServers),
		UseQuorum: int64(s.UseQuorum), ManageQuorum: int64(s.ManageQuorum)}
}

func (c *check) keySpec(m *pb.KeySpec) KeySpec {
	return KeySpec{Type: m.GetType(), Label: m.GetLabel(), PublicLabel: m.GetPublicLabel(), PrivateLabel: m.GetPrivateLabel(),
		LengthBytes: c.int("length_bytes", m.GetLengthBytes()), Curve: m.GetCurve(),
		ModulusBits: c.int("modulus_bits", m.GetModulusBits()), Exponent: c.int("exponent", m.GetExponent()),
		MLDSAParams: m.GetMldsaParams(), Session: m.GetSession(), Attributes: m.GetAttributes(),
		PublicAttributes: m.GetPublicAttributes(), PrivateAttributes: m.GetPrivateAttributes(), ShareWith: m.GetShareWith(),
		MinServers: c.int("min_servers", m.GetMinServers()), UseQuorum: c.int("use_quorum", m.GetUseQuorum()),
		ManageQuorum: c.int("manage_quorum", m.GetManageQuorum())}
}

func generateArgsPB(a GenerateArgs) (*pb.GenerateArgs, error) {
	return &pb.GenerateArgs{Spec: keySpecPB(&a.Spec), Ref: uint64(a.Ref), Wrap: a.Wrap, Stage: a.Stage}, nil
}

func generateArgsOf(m *pb.GenerateArgs) (GenerateArgs, error) {
	var c check
	a := GenerateArgs{Spec: c.keySpec(m.Spec), Ref: Ref(m.Ref), Wrap: m.Wrap, Stage: m.Stage}
	return a, c.err
}

func importArgsPB(a ImportArgs) (*pb.ImportArgs, error) {
	s := &a.Spec
	return &pb.ImportArgs{Spec: &pb.ImportSpec{Pem: s.PEM, Label: s.Label, Class: s.Class, Attributes: s.Attributes,
		Session: s.Session, MinServers: int64(s.MinServers)}, Ref: uint64(a.Ref), Wrap: a.Wrap}, nil
}

func importArgsOf(m *pb.ImportArgs) (ImportArgs, error) {
	var c check
	s := m.Spec
	a := ImportArgs{Spec: ImportSpec{PEM: s.GetPem(), Label: s.GetLabel(), Class: s.GetClass(), Attributes: s.GetAttributes(),
		Session: s.GetSession(), MinServers: c.int("min_servers", s.GetMinServers())}, Ref: Ref(m.Ref), Wrap: m.Wrap}
	return a, c.err
}

func wrappedKeyPB(w WrappedKey) (*pb.WrappedKey, error) {
	return &pb.WrappedKey{Domain: w.Domain, Ref: uint64(w.Ref), User: w.User, Body: w.Body}, nil
}

func wrappedKeyOf(m *pb.WrappedKey) (WrappedKey, error) {
	return WrappedKey{Domain: m.GetDomain(), Ref: Ref(m.GetRef()), User: m.GetUser(), Body: m.GetBody()}, nil
}

// wrappedPB is an optional WrappedKey: nil stays nil.
func wrappedPB(w *WrappedKey) *pb.WrappedKey {
	if w == nil {
		return nil
	}
	m, _ := wrappedKeyPB(*w)
	return m
}

func wrappedOf(m *pb.WrappedKey) *WrappedKey {
	if m == nil {
		return nil
	}
	w, _ := wrappedKeyOf(m)
	return &w
}

func createReplyPB(r CreateReply) (*pb.CreateReply, error) {
	var c check
	m := &pb.CreateReply{Keys: c.keyMetasPB(r.Keys), Staged: r.Staged}
	if len(r.Wrapped) > 0 {
		m.Wrapped = make([]*pb.WrappedKey, len(r.Wrapped))
		for i, w := range r.Wrapped {
			if w == nil {
				c.fail(fmt.Sprintf("wrapped[%d]", i), errors.New("no wrapped key"))
			}
			m.Wrapped[i] = wrappedPB(w)
		}
	}
	return m, c.err
}

func createReplyOf(m *pb.CreateReply) (CreateReply, error) {
	var c check
	r := CreateReply{Keys: c.keyMetas(m.Keys), Staged: m.Staged}
	if len(m.Wrapped) > 0 {
		r.Wrapped = make([]*WrappedKey, len(m.Wrapped))
		for i, w := range m.Wrapped {
			r.Wrapped[i] = wrappedOf(w)
		}
	}
	return r, c.err
}

func importWrappedArgsPB(a ImportWrappedArgs) (*pb.ImportWrappedArgs, error) {
	return &pb.ImportWrappedArgs{Key: wrappedPB(a.Key), Approval: approvalPB(a.Approval)}, nil
}

func importWrappedArgsOf(m *pb.ImportWrappedArgs) (ImportWrappedArgs, error) {
	return ImportWrappedArgs{Key: wrappedOf(m.Key), Approval: approvalOf(m.Approval)}, nil
}

func keyChangeArgsPB(a KeyChangeArgs) (*pb.KeyChangeArgs, error) {
	return &pb.KeyChangeArgs{Ref: uint64(a.Ref), Op: a.Op, User: a.User, Name: a.Name, Value: a.Value,
		Approval: approvalPB(a.Approval)}, nil
}

func keyChangeArgsOf(m *pb.KeyChangeArgs) (KeyChangeArgs, error) {
	return KeyChangeArgs{Ref: Ref(m.Ref), Op: m.Op, User: m.User, Name: m.Name, Value: m.Value,
		Approval: approvalOf(m.Approval)}, nil
}

func wrapParamsPB(p *WrapParams) *pb.WrapParams {
	return &pb.WrapParams{Mechanism: p.Mechanism, TagLengthBits: int64(p.TagLengthBits), Aad: p.AAD, Iv: p.IV,
		Hash: p.Hash, Mgf: p.MGF}
}

func (c *check) wrapParams(m *pb.WrapParams) WrapParams {
	return WrapParams{Mechanism: m.GetMechanism(), TagLengthBits: c.int("tag_length_bits", m.GetTagLengthBits()),
		AAD: m.GetAad(), IV: m.GetIv(), Hash: m.GetHash(), MGF: m.GetMgf()}
}

func wrapArgsPB(a WrapArgs) (*pb.WrapArgs, error) {
	return &pb.WrapArgs{Params: wrapParamsPB(&a.Params), Payload: uint64(a.Payload), Wrapping: uint64(a.Wrapping),
		PayloadApproval: approvalPB(a.PayloadApproval), WrappingApproval: approvalPB(a.WrappingApproval)}, nil
}

func wrapArgsOf(m *pb.WrapArgs) (WrapArgs, error) {
	var c check
	a := WrapArgs{Params: c.wrapParams(m.Params), Payload: Ref(m.Payload), Wrapping: Ref(m.Wrapping),
		PayloadApproval: approvalOf(m.PayloadApproval), WrappingApproval: approvalOf(m.WrappingApproval)}
	return a, c.err
}

func wrapReplyPB(r WrapReply) (*pb.WrapReply, error) {
	return &pb.WrapReply{Iv: r.IV, Data: r.Data}, nil
}

func wrapReplyOf(m *pb.WrapReply) (WrapReply, error) {
	return WrapReply{IV: m.Iv, Data: m.Data}, nil
}

func unwrapArgsPB(a UnwrapArgs) (*pb.UnwrapArgs, error) {
	s := &a.Spec
	return &pb.UnwrapArgs{Spec: &pb.UnwrapSpec{Params: wrapParamsPB(&s.Params), Unwrapping: uint64(s.Unwrapping),
		Data: s.Data, KeyTypeClass: s.KeyTypeClass, Label: s.Label, Attributes: s.Attributes, Session: s.Session,
		ShareWith: s.ShareWith, UseQuorum: int64(s.UseQuorum), ManageQuorum: int64(s.ManageQuorum),
		MinServers: int64(s.MinServers), Approval: approvalPB(s.Approval)}, Ref: uint64(a.Ref), Wrap: a.Wrap}, nil
}

func unwrapArgsOf(m *pb.UnwrapArgs) (UnwrapArgs, error) {
	var c check
	s := m.Spec
	a := UnwrapArgs{Spec: UnwrapSpec{Params: c.wrapParams(s.GetParams()), Unwrapping: Ref(s.GetUnwrapping()),
		Data: s.GetData(), KeyTypeClass: s.GetKeyTypeClass(), Label: s.GetLabel(), Attributes: s.GetAttributes(),
		Session: s.GetSession(), ShareWith: s.GetShareWith(), UseQuorum: c.int("use_quorum", s.GetUseQuorum()),
		ManageQuorum: c.int("manage_quorum", s.GetManageQuorum()), MinServers: c.int("min_servers", s.GetMinServers()),
		Approval: approvalOf(s.GetApproval())}, Ref: Ref(m.Ref), Wrap: m.Wrap}
	return a, c.err
}

// ---- Users ----

func userArgsPB(a UserArgs) (*pb.UserArgs, error) {
	return &pb.UserArgs{Username: a.Username, Role: string(a.Role), Password: a.Password, Approval: approvalPB(a.Approval)}, nil
}

func userArgsOf(m *pb.UserArgs) (UserArgs, error) {
	return UserArgs{Username: m.Username, Role: Role(m.Role), Password: m.Password, Approval: approvalOf(m.Approval)}, nil
}

func userViewPB(u UserView) (*pb.UserView, error) {
	return &pb.UserView{Username: u.Username, Role: string(u.Role), Locked: u.Locked, QuorumKey: u.QuorumKey,
		Mfa: u.MFA, Updated: u.Updated}, nil
}

func userViewOf(m *pb.UserView) (UserView, error) {
	return UserView{Username: m.GetUsername(), Role: Role(m.GetRole()), Locked: m.GetLocked(), QuorumKey: m.GetQuorumKey(),
		MFA: m.GetMfa(), Updated: m.GetUpdated()}, nil
}

func userListPB(us []UserView) (*pb.UserList, error) {
	m := &pb.UserList{}
	if len(us) > 0 {
		m.Users = make([]*pb.UserView, len(us))
		for i, u := range us {
			m.Users[i], _ = userViewPB(u)
		}
	}
	return m, nil
}

func userListOf(m *pb.UserList) ([]UserView, error) {
	if len(m.Users) == 0 {
		return nil, nil
	}
	out := make([]UserView, len(m.Users))
	for i, u := range m.Users {
		out[i], _ = userViewOf(u)
	}
	return out, nil
}

func registerArgsPB(a RegisterArgs) (*pb.RegisterArgs, error) {
	return &pb.RegisterArgs{PublicKey: a.PubPEM, File: a.File}, nil
}

func registerArgsOf(m *pb.RegisterArgs) (RegisterArgs, error) {
	return RegisterArgs{PubPEM: m.PublicKey, File: m.File}, nil
}

// ---- Quorum ----

func quorumSettingsPB(q QuorumSettings) (*pb.QuorumSettings, error) {
	return &pb.QuorumSettings{Values: intsPB(q.Values), GeneratedS: q.GeneratedS, ApprovedS: q.ApprovedS, Updated: q.Updated}, nil
}

func (c *check) quorumSettings(m *pb.QuorumSettings) QuorumSettings {
	return QuorumSettings{Values: c.ints("values", m.GetValues()), GeneratedS: m.GetGeneratedS(),
		ApprovedS: m.GetApprovedS(), Updated: m.GetUpdated()}
}

func quorumSettingsOf(m *pb.QuorumSettings) (QuorumSettings, error) {
	var c check
	q := c.quorumSettings(m)
	return q, c.err
}

func quorumListPB(l QuorumList) (*pb.QuorumList, error) {
	var c check
	settings, _ := quorumSettingsPB(l.Settings)
	m := &pb.QuorumList{Settings: settings}
	if len(l.Tokens) > 0 {
		m.Tokens = make([]*pb.Token, len(l.Tokens))
		for i, t := range l.Tokens {
			if t == nil {
				c.fail(fmt.Sprintf("tokens[%d]", i), errors.New("no token"))
				continue
			}
			m.Tokens[i] = &pb.Token{Nonce: t.Nonce, ApprovalData: t.ApprovalData, Service: t.Service, Requester: t.Requester,
				Expires: c.timestamp("expires", t.Expires), Used: c.timestamp("used", t.Used), Signers: t.Signers}
		}
	}
	return m, c.err
}

func quorumListOf(m *pb.QuorumList) (QuorumList, error) {
	var c check
	l := QuorumList{Settings: c.quorumSettings(m.Settings)}
	if len(m.Tokens) > 0 {
		l.Tokens = make([]*Token, len(m.Tokens))
		for i, t := range m.Tokens {
			l.Tokens[i] = &Token{Nonce: t.GetNonce(), ApprovalData: t.GetApprovalData(), Service: t.GetService(),
				Requester: t.GetRequester(), Expires: c.time("expires", t.GetExpires()), Used: c.time("used", t.GetUsed()),
				Signers: t.GetSigners()}
		}
	}
	return l, c.err
}

func issueArgsPB(a IssueArgs) (*pb.IssueArgs, error) {
	return &pb.IssueArgs{Service: a.Service, KeyRef: refPB(a.KeyRef), Command: a.Command, Cluster: a.Cluster}, nil
}

func issueArgsOf(m *pb.IssueArgs) (IssueArgs, error) {
	return IssueArgs{Service: m.Service, KeyRef: refOf(m.KeyRef), Command: m.Command, Cluster: m.Cluster}, nil
}

func setQuorumArgsPB(a SetQuorumArgs) (*pb.SetQuorumArgs, error) {
	return &pb.SetQuorumArgs{Service: a.Service, Value: int64(a.Value), GeneratedNs: int64(a.Generated),
		ApprovedNs: int64(a.Approved), Approval: approvalPB(a.Approval)}, nil
}

func setQuorumArgsOf(m *pb.SetQuorumArgs) (SetQuorumArgs, error) {
	var c check
	a := SetQuorumArgs{Service: m.Service, Value: c.int("value", m.Value), Generated: time.Duration(m.GeneratedNs),
		Approved: time.Duration(m.ApprovedNs), Approval: approvalOf(m.Approval)}
	return a, c.err
}

// ---- Backup ----

func backupArgsPB(a BackupArgs) (*pb.BackupArgs, error) {
	var c check
	i := &a.Info
	m := &pb.BackupArgs{Cluster: a.Cluster, Key: a.Key, Approval: approvalPB(a.Approval),
		Info: &pb.BackupInfo{Format: i.Format, Cluster: i.Cluster, Hsm: i.HSM, Domain: i.Domain,
			Created: c.timestamp("created", i.Created), Keys: int64(i.Keys), Users: int64(i.Users), Salt: i.Salt,
			KdfTime: i.Time, KdfMemoryKib: i.Memory, KdfThreads: uint32(i.Threads)}}
	return m, c.err
}

func backupArgsOf(m *pb.BackupArgs) (BackupArgs, error) {
	var c check
	i := m.Info
	if i.GetKdfThreads() > math.MaxUint8 {
		c.fail("kdf_threads", fmt.Errorf("%d is out of range", i.GetKdfThreads()))
	}
	a := BackupArgs{Cluster: m.Cluster, Key: m.Key, Approval: approvalOf(m.Approval),
		Info: BackupInfo{Format: i.GetFormat(), Cluster: i.GetCluster(), HSM: i.GetHsm(), Domain: i.GetDomain(),
			Created: c.time("created", i.GetCreated()), Keys: c.int("keys", i.GetKeys()), Users: c.int("users", i.GetUsers()),
			Salt: i.GetSalt(), Time: i.GetKdfTime(), Memory: i.GetKdfMemoryKib(), Threads: uint8(i.GetKdfThreads())}}
	return a, c.err
}

// ---- mTLS ----

func mtlsArgsPB(a MTLSArgs) (*pb.MTLSArgs, error) {
	return &pb.MTLSArgs{CertPem: a.CertPEM, Ref: int64(a.Ref), Level: a.Level, Approval: approvalPB(a.Approval)}, nil
}

func mtlsArgsOf(m *pb.MTLSArgs) (MTLSArgs, error) {
	var c check
	a := MTLSArgs{CertPEM: m.CertPem, Ref: c.int("ref", m.Ref), Level: m.Level, Approval: approvalOf(m.Approval)}
	return a, c.err
}

func mtlsStatePB(s MTLSState) (*pb.MTLSState, error) {
	m := &pb.MTLSState{Level: s.Level, Updated: s.Updated}
	if len(s.Anchors) > 0 {
		m.Anchors = make([]*pb.TrustAnchor, len(s.Anchors))
		for i, a := range s.Anchors {
			m.Anchors[i] = &pb.TrustAnchor{Ref: int64(a.Ref), Der: a.DER}
		}
	}
	return m, nil
}

func mtlsStateOf(m *pb.MTLSState) (MTLSState, error) {
	var c check
	s := MTLSState{Level: m.Level, Updated: m.Updated}
	if len(m.Anchors) > 0 {
		s.Anchors = make([]TrustAnchor, len(m.Anchors))
		for i, a := range m.Anchors {
			s.Anchors[i] = TrustAnchor{Ref: c.int("anchors.ref", a.GetRef()), DER: a.GetDer()}
		}
	}
	return s, c.err
}

// ---- Bootstrap ----

func hsmInfoPB(i HSMInfo) (*pb.HSMInfo, error) {
	m := &pb.HSMInfo{Id: i.ID, State: string(i.State), Address: i.Address, UserCount: int64(i.UserCount),
		LatencyMs: i.LatencyMS, Tls: i.TLS, Identity: i.Identity, Domain: i.Domain}
	if i.TokenKeyCount != nil {
		n := int64(*i.TokenKeyCount)
		m.TokenKeyCount = &n
	}
	if r := i.Raft; r != nil {
		m.Raft = &pb.RaftInfo{Role: r.Role, Leader: r.Leader, Term: r.Term, CommitIndex: r.CommitIndex,
			AppliedIndex: r.AppliedIndex, LastContact: r.LastContact, Voters: int64(r.Voters)}
	}
	return m, nil
}

func hsmInfoOf(m *pb.HSMInfo) (HSMInfo, error) {
	var c check
	i := HSMInfo{ID: m.Id, State: HSMState(m.State), Address: m.Address, UserCount: c.int("user_count", m.UserCount),
		LatencyMS: m.LatencyMs, TLS: m.Tls, Identity: m.Identity, Domain: m.Domain}
	if m.TokenKeyCount != nil {
		n := c.int("token_key_count", *m.TokenKeyCount)
		i.TokenKeyCount = &n
	}
	if r := m.Raft; r != nil {
		i.Raft = &RaftInfo{Role: r.Role, Leader: r.Leader, Term: r.Term, CommitIndex: r.CommitIndex,
			AppliedIndex: r.AppliedIndex, LastContact: r.LastContact, Voters: c.int("raft.voters", r.Voters)}
	}
	return i, c.err
}

func domainInfoPB(d DomainInfo) (*pb.DomainInfo, error) {
	return &pb.DomainInfo{Id: d.ID, Identity: d.Identity, Domain: d.Domain, Members: d.Members}, nil
}

func domainInfoOf(m *pb.DomainInfo) (DomainInfo, error) {
	return DomainInfo{ID: m.Id, Identity: m.Identity, Domain: m.Domain, Members: m.Members}, nil
}

func handshakeArgsPB(a HandshakeArgs) (*pb.HandshakeArgs, error) {
	m := &pb.HandshakeArgs{ClientKey: a.ClientKey, User: a.User, LifetimeNs: int64(a.Lifetime)}
	if h := a.Hello; h != nil {
		m.Hello = &pb.HandshakeHello{Client: h.Client, Q1: h.Q1, Sig: h.Sig}
	}
	return m, nil
}

func handshakeArgsOf(m *pb.HandshakeArgs) (HandshakeArgs, error) {
	a := HandshakeArgs{ClientKey: m.ClientKey, User: m.User, Lifetime: time.Duration(m.LifetimeNs)}
	if h := m.Hello; h != nil {
		a.Hello = &authsession.Hello{Client: h.Client, Q1: h.Q1, Sig: h.Sig}
	}
	return a, nil
}

func handshakeReplyPB(r authsession.Reply) (*pb.HandshakeReply, error) {
	return &pb.HandshakeReply{Hsm: r.HSM, Q2: r.Q2, Esk: r.ESK, Ekt: r.EKT, Sig: r.Sig}, nil
}

func handshakeReplyOf(m *pb.HandshakeReply) (authsession.Reply, error) {
	return authsession.Reply{HSM: m.Hsm, Q2: m.Q2, ESK: m.Esk, EKT: m.Ekt, Sig: m.Sig}, nil
}

func authArgsPB(a AuthArgs) (*pb.AuthArgs, error) {
	e := a.Envelope
	return &pb.AuthArgs{Ekt: a.EKT, Envelope: &pb.Envelope{Ekt: e.EKT, Seq: e.Seq, Body: e.Body}}, nil
}

func authArgsOf(m *pb.AuthArgs) (AuthArgs, error) {
	e := m.Envelope
	return AuthArgs{EKT: m.Ekt, Envelope: authsession.Envelope{EKT: e.GetEkt(), Seq: e.GetSeq(), Body: e.GetBody()}}, nil
}

// ---- Lab ----

func syncStatsPB(s SyncStats) (*pb.SyncStats, error) {
	return &pb.SyncStats{KeysCopied: int64(s.Copied), KeysDeleted: int64(s.Deleted), UsersCopied: int64(s.Users),
		Failures: int64(s.Failed), TookNs: int64(s.Took), TookMs: s.TookMS}, nil
}

func (c *check) syncStats(m *pb.SyncStats) SyncStats {
	return SyncStats{Copied: c.int("keys_copied", m.GetKeysCopied()), Deleted: c.int("keys_deleted", m.GetKeysDeleted()),
		Users: c.int("users_copied", m.GetUsersCopied()), Failed: c.int("failures", m.GetFailures()),
		Took: time.Duration(m.GetTookNs()), TookMS: m.GetTookMs()}
}

func syncStatsOf(m *pb.SyncStats) (SyncStats, error) {
	var c check
	s := c.syncStats(m)
	return s, c.err
}

func syncStatusPB(s SyncStatus) (*pb.SyncStatus, error) {
	var c check
	last, _ := syncStatsPB(s.Last)
	m := &pb.SyncStatus{Paused: s.Paused, IntervalNs: int64(s.Interval), Next: c.timestamp("next", s.Next), Last: last}
	return m, c.err
}

func syncStatusOf(m *pb.SyncStatus) (SyncStatus, error) {
	var c check
	s := SyncStatus{Paused: m.Paused, Interval: time.Duration(m.IntervalNs), Next: c.time("next", m.Next), Last: c.syncStats(m.Last)}
	return s, c.err
}
