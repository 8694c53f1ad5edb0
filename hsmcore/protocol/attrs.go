package protocol

import (
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Key classes and types, as CloudHSM CLI names them.
const (
	ClassSecret  = "secret-key"
	ClassPrivate = "private-key"
	ClassPublic  = "public-key"

	TypeAES           = "aes"
	TypeGenericSecret = "generic-secret"
	TypeEC            = "ec"
	TypeRSA           = "rsa"
	// TypeMLDSA is an ML-DSA (FIPS 204) key, "ml-dsa" as the example
	// output of cloudhsm_cli-key-generate-asymmetric-pair-mldsa shows it.
	TypeMLDSA = "ml-dsa"
)

// MaxLabelLen is CloudHSM's limit on a key label.
const MaxLabelLen = 127

// Attributes are a key's attributes with CloudHSM CLI's names. The field
// order is the order CloudHSM CLI prints them in.
type Attributes struct {
	KeyType          string `json:"key-type"`
	Label            string `json:"label"`
	ID               string `json:"id"`
	CheckValue       string `json:"check-value"`
	Class            string `json:"class"`
	Encrypt          bool   `json:"encrypt"`
	Decrypt          bool   `json:"decrypt"`
	Token            bool   `json:"token"`
	AlwaysSensitive  bool   `json:"always-sensitive"`
	Derive           bool   `json:"derive"`
	Destroyable      bool   `json:"destroyable"`
	Extractable      bool   `json:"extractable"`
	Local            bool   `json:"local"`
	Modifiable       bool   `json:"modifiable"`
	NeverExtractable bool   `json:"never-extractable"`
	Private          bool   `json:"private"`
	// MLDSAAlgorithm is an ML-DSA key's parameter set (ML-DSA-44, -65,
	// -87), where CloudHSM CLI prints it: after private.
	MLDSAAlgorithm  string `json:"mldsa-algorithm,omitempty"`
	Sensitive       bool   `json:"sensitive"`
	Sign            bool   `json:"sign"`
	Trusted         bool   `json:"trusted"`
	Unwrap          bool   `json:"unwrap"`
	Verify          bool   `json:"verify"`
	Wrap            bool   `json:"wrap"`
	WrapWithTrusted bool   `json:"wrap-with-trusted"`
	KeyLengthBytes  int    `json:"key-length-bytes,omitempty"`
	ECPoint         string `json:"ec-point,omitempty"`
	Curve           string `json:"curve,omitempty"`
	PublicExponent  string `json:"public-exponent,omitempty"`
	Modulus         string `json:"modulus,omitempty"`
	ModulusSizeBits int    `json:"modulus-size-bits,omitempty"`
}

// attrKind says how an attribute's value is written and who may change it.
type attrKind struct {
	boolean  bool
	settable bool // by key set-attribute and --attributes at creation
	create   bool // only at creation, through --attributes
	// oneWay is the only value key set-attribute may give it after
	// creation: a key can become sensitive, never sensitive again.
	oneWay string
	// admin: key set-attribute by an admin only (trusted), as
	// CloudHSM's attribute table has it.
	admin bool
}

var attrKinds = map[string]attrKind{
	"key-type": {}, "check-value": {}, "class": {}, "always-sensitive": {boolean: true},
	"destroyable": {boolean: true, settable: true, oneWay: "false"}, "local": {boolean: true}, "modifiable": {boolean: true},
	"never-extractable": {boolean: true}, "private": {boolean: true},
	"trusted":           {boolean: true, settable: true, admin: true},
	"wrap-with-trusted": {boolean: true, settable: true, oneWay: "true"},
	"key-length-bytes":  {}, "ec-point": {}, "curve": {}, "mldsa-algorithm": {},
	"modulus": {}, "modulus-size-bits": {}, "public-exponent": {},
	"label": {settable: true}, "id": {settable: true},
	"token":       {boolean: true},
	"encrypt":     {boolean: true, settable: true},
	"decrypt":     {boolean: true, settable: true},
	"derive":      {boolean: true, settable: true},
	"sign":        {boolean: true, settable: true},
	"verify":      {boolean: true, settable: true},
	"wrap":        {boolean: true, settable: true},
	"unwrap":      {boolean: true, settable: true},
	"sensitive":   {boolean: true, create: true, oneWay: "true"},
	"extractable": {boolean: true, create: true, oneWay: "false"},
}

// AttributeNames lists every attribute name, sorted, for help and completion.
func AttributeNames() []string {
	names := make([]string, 0, len(attrKinds))
	for n := range attrKinds {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Map returns the attributes as name → value, with values written as
// CloudHSM CLI prints them; filters compare against these.
func (a Attributes) Map() map[string]string {
	b, _ := json.Marshal(a)
	var raw map[string]any
	_ = json.Unmarshal(b, &raw)
	out := make(map[string]string, len(raw))
	for k, v := range raw {
		switch v := v.(type) {
		case string:
			out[k] = v
		case bool:
			out[k] = strconv.FormatBool(v)
		case float64:
			out[k] = strconv.FormatInt(int64(v), 10)
		}
	}
	return out
}

// attrFields maps each attribute's JSON name to its field, and says
// whether an empty value leaves it out (omitempty), as Map does.
var attrFields = func() map[string]attrField {
	m := map[string]attrField{}
	t := reflect.TypeFor[Attributes]()
	for i := range t.NumField() {
		name, opts, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		if name != "" && name != "-" {
			m[name] = attrField{index: i, omitEmpty: strings.Contains(opts, "omitempty")}
		}
	}
	return m
}()

type attrField struct {
	index     int
	omitEmpty bool
}

// Get is one attribute's value as Map gives it, without building the
// map: filters test a few attributes of every key the HSM holds.
func (a *Attributes) Get(name string) (string, bool) {
	switch name { // the usual filters, without reflection
	case "label":
		return a.Label, true
	case "class":
		return a.Class, true
	case "key-type":
		return a.KeyType, true
	case "id":
		return a.ID, true
	}
	f, ok := attrFields[name]
	if !ok {
		return "", false
	}
	v := reflect.ValueOf(a).Elem().Field(f.index)
	if f.omitEmpty && v.IsZero() {
		return "", false
	}
	switch v.Kind() {
	case reflect.String:
		return v.String(), true
	case reflect.Bool:
		return strconv.FormatBool(v.Bool()), true
	case reflect.Int, reflect.Int64, reflect.Int32:
		return strconv.FormatInt(v.Int(), 10), true
	}
	return "", false
}

// ValidateLabel applies CloudHSM's label rule.
func ValidateLabel(label string) error {
	if label == "" {
		return fmt.Errorf("%w: label must not be empty", ErrInvalid)
	}
	if n := utf8.RuneCountInString(label); n > MaxLabelLen {
		return fmt.Errorf("%w: label is %d characters long; the limit is %d", ErrInvalid, n, MaxLabelLen)
	}
	return nil
}

// Set changes one attribute by name. creating says whether this is the
// key's creation (--attributes), where sensitive and extractable may be set.
func (a *Attributes) Set(name, value string, creating bool) error {
	kind, ok := attrKinds[name]
	if !ok {
		return fmt.Errorf("%w: unknown attribute %q (known: %s)", ErrInvalid, name, strings.Join(AttributeNames(), ", "))
	}
	if creating && kind.admin {
		return fmt.Errorf("%w: attribute %s is set by an admin, with key set-attribute, once the key is made", ErrInvalid, name)
	}
	if !kind.settable && !(creating && kind.create) && kind.oneWay == "" {
		if kind.create {
			return fmt.Errorf("%w: attribute %q can only be set when the key is made", ErrInvalid, name)
		}
		return fmt.Errorf("%w: attribute %q is read-only", ErrInvalid, name)
	}
	var b bool
	if kind.boolean {
		switch strings.ToLower(value) {
		case "true", "1", "yes":
			b = true
		case "false", "0", "no":
		default:
			return fmt.Errorf("%w: attribute %s takes true or false, not %q", ErrInvalid, name, value)
		}
		if b && !a.Allows(name) {
			return fmt.Errorf("%w: attribute %s cannot be true on a %s %s key", ErrInvalid, name, a.KeyType, a.Class)
		}
		if !creating && kind.oneWay != "" && strconv.FormatBool(b) != kind.oneWay {
			if cur, _ := a.Get(name); cur == strconv.FormatBool(b) {
				return nil // already so: nothing changes
			}
			return fmt.Errorf("%w: attribute %s can only be changed to %s once the key is made", ErrInvalid, name, kind.oneWay)
		}
	}
	switch name {
	case "label":
		if err := ValidateLabel(value); err != nil {
			return err
		}
		a.Label = value
	case "id":
		if len(value) > 128 {
			return fmt.Errorf("%w: id is %d characters long; the limit is 128", ErrInvalid, len(value))
		}
		a.ID = value
	case "encrypt":
		a.Encrypt = b
	case "decrypt":
		a.Decrypt = b
	case "derive":
		a.Derive = b
	case "sign":
		a.Sign = b
	case "verify":
		a.Verify = b
	case "wrap":
		a.Wrap = b
	case "unwrap":
		a.Unwrap = b
	case "sensitive":
		if creating {
			a.AlwaysSensitive = b
		}
		a.Sensitive = b
	case "extractable":
		if creating {
			a.NeverExtractable = !b
		}
		a.Extractable = b
	case "trusted":
		a.Trusted = b
	case "wrap-with-trusted":
		a.WrapWithTrusted = b
	case "destroyable":
		a.Destroyable = b
	}
	return nil
}

// Allows says whether a capability makes sense for this kind of key: a
// public key cannot sign or decrypt, a private key cannot verify or encrypt.
func (a *Attributes) Allows(name string) bool {
	if a.KeyType == TypeMLDSA {
		// ML-DSA only signs and verifies: FIPS 204 defines no encryption,
		// derivation or key wrapping with it.
		switch name {
		case "encrypt", "decrypt", "derive", "wrap", "unwrap":
			return false
		}
	}
	switch a.Class {
	case ClassPublic:
		switch name {
		case "sign", "decrypt", "unwrap", "derive", "sensitive":
			return false
		}
	case ClassPrivate:
		switch name {
		case "verify", "encrypt", "wrap":
			return false
		}
		if a.KeyType == TypeRSA && name == "derive" {
			return false
		}
	case ClassSecret:
		if a.KeyType == TypeGenericSecret {
			// encrypt and decrypt are usage attributes CloudHSM lets a
			// generic secret carry (the generic-secret page's examples
			// set encrypt=true; the attribute table restricts neither);
			// it still cannot wrap or unwrap.
			switch name {
			case "wrap", "unwrap":
				return false
			}
		}
	}
	return true
}

// AdminOnly says whether only an admin may change the attribute (trusted).
func AdminOnly(name string) bool { return attrKinds[name].admin }
