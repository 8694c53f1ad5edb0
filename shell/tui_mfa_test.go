package shell

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	tea "github.com/charmbracelet/bubbletea"
)

// tokenFile is the token file hsmsh writes for token-sign MFA.
type tokenFile struct {
	Version string `json:"version"`
	Tokens  []struct {
		Unsigned string `json:"unsigned"`
		Signed   string `json:"signed"`
	} `json:"tokens"`
}

// signTokenFile signs the token in path as the user does with openssl:
// base64 -d the unsigned value, openssl pkeyutl -sign -inkey KEY.pem
// -pkeyopt digest:sha256 (for an EC key a DER ECDSA signature of the
// SHA-256 digest), base64 the signature into signed.
func signTokenFile(t *testing.T, path string, k *ecdsa.PrivateKey) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var f tokenFile
	if err := json.Unmarshal(b, &f); err != nil || len(f.Tokens) != 1 || f.Tokens[0].Signed != "" {
		t.Fatalf("the unsigned token file: %s (%v)", b, err)
	}
	tok, err := base64.StdEncoding.DecodeString(f.Tokens[0].Unsigned)
	if err != nil {
		t.Fatal(err)
	}
	d := sha256.Sum256(tok)
	sig, err := ecdsa.SignASN1(rand.Reader, k, d[:])
	if err != nil {
		t.Fatal(err)
	}
	f.Tokens[0].Signed = base64.StdEncoding.EncodeToString(sig)
	out, _ := json.Marshal(f)
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
}

// mfaKey makes the user's MFA key pair (P-256) and writes the public key
// to dir/mfa.pub, as openssl pkey -pubout would.
func mfaKey(t *testing.T, dir string) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(k.Public())
	if err := os.WriteFile(filepath.Join(dir, "mfa.pub"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return k
}

// registerMFA registers k as cu1's MFA key with the commands, as
// commands/mfa_test.go does: the user at the terminal signs the
// registration token and names the public key's file.
func registerMFA(t *testing.T, m *Model, dir string, k *ecdsa.PrivateKey) {
	t.Helper()
	env := m.runner.Env
	env.ReadPassword = func(prompt string) (string, error) {
		switch {
		case strings.HasPrefix(prompt, "Enter signed token file path"):
			signTokenFile(t, filepath.Join(dir, "reg.json"), k)
			return "", nil
		case strings.HasPrefix(prompt, "Enter public key PEM file path"):
			return "mfa.pub", nil
		}
		t.Fatalf("unexpected prompt %q", prompt)
		return "", nil
	}
	defer func() { env.ReadPassword = nil }()
	for _, line := range []string{
		"login --username cu1 --role crypto-user --password cu1pass1",
		"user change-mfa token-sign --username cu1 --role crypto-user --token reg.json",
		"logout",
	} {
		if res, _ := m.runner.RunLine(context.Background(), line); !res.OK() {
			t.Fatalf("%s: %s", line, res.JSON())
		}
	}
	if res, _ := m.runner.RunLine(context.Background(), "login --username cu1 --role crypto-user --password cu1pass1"); res.OK() {
		t.Fatal("the password alone still logs in after MFA registration")
	}
}

// startMFALogin types an MFA login and waits until the shell asks for
// the signed token.
func startMFALogin(t *testing.T, m *Model, token string) {
	t.Helper()
	typeLine(m, "login --username cu1 --role crypto-user --password cu1pass1 mfa-token-sign --token "+token)
	pump(t, m, press(m, tea.KeyEnter), func() bool { return m.ask != nil })
}

// squash is a pane's text without its spaces and line ends, so that a
// path wrapped over two lines is found whole.
func squash(lines []string) string { return strings.Join(strings.Fields(strings.Join(lines, " ")), "") }

// The full-screen shell asks for the signed token in the middle of
// login … mfa-token-sign: a pane says where the token is, how to sign it
// and what Enter and Esc do, at 80×24 as at 140×45; the shell stays
// live meanwhile; Enter finishes the login with the signed token, Esc
// cancels it and Ctrl+C too, with nobody logged in.
func TestMFALoginAsksInShell(t *testing.T) {
	m := newTestModel(t, 3, false, "")
	dir := t.TempDir()
	m.env.Dir = dir
	k := mfaKey(t, dir)
	registerMFA(t, m, dir, k)

	m.Update(tea.WindowSizeMsg{Width: 80, Height: 24})
	startMFALogin(t, m, "login.token")
	path := filepath.Join(dir, "login.token")
	v := m.View()
	checkFrame(t, v, 80, 24)
	p, _ := pane(v, "MFA · sign the token (login.token)")
	if p == nil {
		t.Fatalf("no signing pane:\n%s", v)
	}
	text := strings.Join(p, "\n")
	for _, want := range []string{"openssl pkeyutl -sign", "-pkeyopt digest:sha256", "base64 -d", "Enter when signed", "Esc to cancel"} {
		if !strings.Contains(text, want) {
			t.Errorf("the signing pane lacks %q:\n%s", want, v)
		}
	}
	if !strings.Contains(squash(p), path) {
		t.Errorf("the signing pane does not name %s:\n%s", path, v)
	}
	for _, l := range p {
		if strings.HasSuffix(strings.TrimRight(l, " "), "-") {
			t.Errorf("a command wrapped inside a flag: %q", l)
		}
	}
	if !strings.Contains(v, "signed token file (Enter: the same) > ") || !strings.Contains(v, "Esc cancels") {
		t.Errorf("the input line or the status bar does not say what it waits for:\n%s", v)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("the token file: %v", err)
	}

	// The shell stays live while the command waits: Update and View do
	// not wait on the session the login holds. A refresh starts (its
	// reading waits in its own goroutine), the panes toggle, the size
	// changes, typing edits the answer.
	pump(t, m, m.refresh(), func() bool { return true })
	m.Update(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune{'x'}})
	press(m, tea.KeyBackspace)
	press(m, tea.KeyCtrlL)
	if _, h := pane(m.View(), "MFA · sign the token"); h == 0 {
		t.Errorf("the signing pane went with the panes:\n%s", m.View())
	}
	press(m, tea.KeyCtrlL)
	m.Update(tea.WindowSizeMsg{Width: 140, Height: 45})
	v = m.View()
	checkFrame(t, v, 140, 45)
	if p, _ := pane(v, "MFA · sign the token"); !strings.Contains(squash(p), path) {
		t.Errorf("wide layout: no signing pane naming %s:\n%s", path, v)
	}
	m.Update(tea.WindowSizeMsg{Width: 80, Height: 24})
	if !m.running || m.ask == nil {
		t.Fatal("the login stopped waiting")
	}

	// Signed, Enter: the login finishes.
	signTokenFile(t, path, k)
	pump(t, m, press(m, tea.KeyEnter), func() bool { return !m.running })
	v = m.View()
	checkFrame(t, v, 80, 24)
	if u, _, ok := m.env.Who(); !ok || u != "cu1" {
		t.Fatalf("the MFA login did not log cu1 in:\n%s", output(m))
	}
	if m.mode != modeCommand || m.ask != nil || signPaneShown(v) {
		t.Errorf("the question is still up:\n%s", v)
	}
	if out := output(m); strings.Contains(out, "cu1pass1") {
		t.Errorf("the password is in the output:\n%s", out)
	}
	runLine(t, m, "logout")

	// Esc: the login is cancelled, and says so.
	// A line typed while the login runs comes back after the question.
	typeLine(m, "login --username cu1 --role crypto-user --password cu1pass1 mfa-token-sign --token esc.token")
	cmd := press(m, tea.KeyEnter)
	typeLine(m, "key list")
	pump(t, m, cmd, func() bool { return m.ask != nil })
	if v := m.View(); strings.Contains(v, "key list") {
		t.Errorf("the typed line shows in the question:\n%s", v)
	}
	checkFrame(t, m.View(), 80, 24)
	pump(t, m, press(m, tea.KeyEsc), func() bool { return !m.running })
	if got := m.input.Value(); got != "key list" {
		t.Errorf("the line typed meanwhile: %q", got)
	}
	m.input.SetValue("")
	v = m.View()
	checkFrame(t, v, 80, 24)
	if _, _, ok := m.env.Who(); ok {
		t.Fatalf("Esc logged in:\n%s", output(m))
	}
	if out := output(m); !strings.Contains(out, "token signing cancelled (Esc)") {
		t.Errorf("the cancel is not said:\n%s", out)
	}
	if m.mode != modeCommand || m.ask != nil || signPaneShown(v) {
		t.Errorf("the question is still up after Esc:\n%s", v)
	}

	// Ctrl+C while it waits cancels the run: the command's wait ends
	// with it (its late result comes back and is dropped).
	startMFALogin(t, m, "ctrlc.token")
	press(m, tea.KeyCtrlC)
	pump(t, m, nil, func() bool { return len(m.late) == 0 })
	v = m.View()
	checkFrame(t, v, 80, 24)
	if _, _, ok := m.env.Who(); ok || m.running || m.ask != nil || m.mode != modeCommand {
		t.Fatalf("after Ctrl+C: running %v, mode %v:\n%s", m.running, m.mode, v)
	}

	// A signed file elsewhere: its path typed at the question.
	startMFALogin(t, m, "third.token")
	b, _ := os.ReadFile(filepath.Join(dir, "third.token"))
	os.WriteFile(filepath.Join(dir, "third.signed"), b, 0o600)
	signTokenFile(t, filepath.Join(dir, "third.signed"), k)
	typeLine(m, "third.signed")
	pump(t, m, press(m, tea.KeyEnter), func() bool { return !m.running })
	if u, _, ok := m.env.Who(); !ok || u != "cu1" {
		t.Fatalf("the login with the signed file's path did not log in:\n%s", output(m))
	}
	checkFrame(t, m.View(), 80, 24)
}

// user change-mfa token-sign in the full-screen shell: the registration
// token is signed between two steps, then the public key's file is asked
// for on the input line (a path, shown as typed); with --change-quorum a
// second token, FILE.quorum, is signed too. The shell's own Env never
// gets a ReadPassword: only the run does.
func TestMFARegisterInShell(t *testing.T) {
	m := newTestModel(t, 3, true, "")
	dir := t.TempDir()
	m.env.Dir = dir
	k := mfaKey(t, dir)
	m.Update(tea.WindowSizeMsg{Width: 80, Height: 24})
	typeLine(m, "user change-mfa token-sign --username cu1 --role crypto-user --token reg.json --change-quorum")
	// The shell asks for --change-password (twice) in its masked field
	// before the command starts.
	press(m, tea.KeyEnter)
	typeLine(m, "cu1pass1")
	press(m, tea.KeyEnter)
	typeLine(m, "cu1pass1")
	for _, file := range []string{"reg.json", "reg.json.quorum"} {
		pump(t, m, press(m, tea.KeyEnter), func() bool { return m.signing() || !m.running })
		v := m.View()
		checkFrame(t, v, 80, 24)
		p, _ := pane(v, "MFA · sign the token ("+file+")")
		if !strings.Contains(squash(p), filepath.Join(dir, file)) {
			t.Fatalf("no signing pane for %s:\n%s\n%s", file, v, output(m))
		}
		signTokenFile(t, filepath.Join(dir, file), k)
		if file == "reg.json" {
			pump(t, m, press(m, tea.KeyEnter), func() bool { return m.ask != nil && !m.signing() })
			v = m.View()
			checkFrame(t, v, 80, 24)
			if !strings.Contains(v, "Enter public key PEM file path: ") {
				t.Fatalf("no question for the public key:\n%s", v)
			}
			typeLine(m, "mfa.pub")
			if !strings.Contains(m.View(), "mfa.pub") {
				t.Errorf("a path is masked:\n%s", m.View())
			}
		}
	}
	pump(t, m, press(m, tea.KeyEnter), func() bool { return !m.running })
	if out := output(m); !strings.Contains(out, `"username": "cu1"`) || strings.Contains(out, "✗") {
		t.Fatalf("registration:\n%s", out)
	}
	if m.env.ReadPassword != nil {
		t.Error("the shell's Env has a ReadPassword")
	}
	runLine(t, m, "logout")
	if res, _ := m.runner.RunLine(context.Background(), "login --username cu1 --role crypto-user --password cu1pass1"); res.OK() {
		t.Error("the password alone still logs in")
	}
}

// A question that is not a path (a password a command asks for) is
// masked; one from a run that is no longer current is refused at once.
func TestAskMaskedAndStale(t *testing.T) {
	m := newTestModel(t, 1, false, "")
	m.Update(tea.WindowSizeMsg{Width: 80, Height: 24})
	m.running, m.runID = true, 7
	req := &askReq{prompt: "New password: ", secret: true, reply: make(chan askReply, 1)}
	m.Update(askMsg{id: 7, req: req})
	typeLine(m, "s3cretpass")
	v := m.View()
	checkFrame(t, v, 80, 24)
	if strings.Contains(v, "s3cretpass") || !strings.Contains(v, "New password: ") {
		t.Errorf("the password question:\n%s", v)
	}
	press(m, tea.KeyEnter)
	if r := <-req.reply; r.text != "s3cretpass" || r.err != nil {
		t.Errorf("answer %+v", r)
	}
	stale := &askReq{prompt: "x", reply: make(chan askReply, 1)}
	m.Update(askMsg{id: 6, req: stale})
	if r := <-stale.reply; r.err == nil || m.ask != nil {
		t.Errorf("a stale question was shown: %+v", r)
	}
}

// signPaneShown is whether the screen shows the pane of a token to sign.
func signPaneShown(v string) bool {
	p, _ := pane(v, "MFA · sign the token")
	return p != nil
}
