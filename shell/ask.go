package shell

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/charmbracelet/bubbles/textinput"
	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/x/ansi"

	"github.com/hsmsh/hsmsh/commands"
)

// Questions a command asks while it runs: the full-screen shell's answer
// to a terminal read in the middle of a command. Token-sign MFA is the
// case in point: after the right password the HSM answers with a token,
// the command writes it to a file and waits while the user signs it with
// openssl; then it reads the signature and finishes the login.
//
// The command runs in its own goroutine (started by the run's tea.Cmd);
// when it asks, its goroutine blocks on a reply channel, never the
// bubbletea Update loop. The question reaches the model as an askMsg,
// the model shows it (a pane for a token to sign, the input line for a
// plain question) and the user's Enter or Esc sends the reply.

// errAskCancelled is the answer of Esc at a mid-command question.
var errAskCancelled = errors.New("cancelled at the prompt (Esc)")

// errSignCancelled is Esc while a token waits to be signed.
var errSignCancelled = errors.New("token signing cancelled (Esc); nothing was logged in or registered")

// askReq is one question a running command asks.
type askReq struct {
	prompt string // what the command asked
	token  string // the token file to sign ("" for a plain question)
	secret bool   // the answer is masked
	reply  chan askReply
}

type askReply struct {
	text string
	err  error
}

// askMsg is a question from run id; next waits for the run's next
// question or its result.
type askMsg struct {
	id   int
	req  *askReq
	next tea.Cmd
}

// runAsker is what a running command calls to ask the user (its Env's
// ReadPassword and WaitSigned). The shell gives each run one, bound to
// the run's context, so a cancelled run's question is never shown to the
// next one.
type runAsker struct {
	ctx  context.Context
	asks chan<- *askReq
}

// ask sends a question to the model and waits for the answer, or for the
// run to be cancelled (Ctrl+C).
func (a *runAsker) ask(req *askReq) (string, error) {
	select {
	case a.asks <- req:
	case <-a.ctx.Done():
		return "", a.ctx.Err()
	}
	select {
	case r := <-req.reply:
		return r.text, r.err
	case <-a.ctx.Done():
		return "", a.ctx.Err()
	}
}

// ReadPassword is commands.Env.ReadPassword: a question on the input
// line, masked unless it asks for a file path.
func (a *runAsker) ReadPassword(prompt string) (string, error) {
	return a.ask(&askReq{prompt: prompt, secret: !strings.Contains(strings.ToLower(prompt), "file path"), reply: make(chan askReply, 1)})
}

// WaitSigned is commands.Env.WaitSigned: the token-signing pane for the
// token file the command wrote.
func (a *runAsker) WaitSigned(tokenPath string) (string, error) {
	return a.ask(&askReq{prompt: commands.SignedTokenPrompt, token: tokenPath, reply: make(chan askReply, 1)})
}

// askingRunner is the model's runner with an Env of its own for one run,
// whose ReadPassword asks through asks. The Env is a copy: the shell's
// own keeps ReadPassword nil, so nothing else can read the keyboard
// underneath bubbletea.
func (m *Model) askingRunner(ctx context.Context, asks chan<- *askReq) *commands.Runner {
	r := *m.runner
	env := *m.runner.Env
	a := &runAsker{ctx: ctx, asks: asks}
	env.ReadPassword, env.WaitSigned = a.ReadPassword, a.WaitSigned
	r.Env = &env
	return &r
}

// waitRun waits for run id's next question or its result.
func waitRun(id int, asks <-chan *askReq, done <-chan resultMsg) tea.Cmd {
	return func() tea.Msg {
		select {
		case res := <-done:
			return res
		case req := <-asks:
			return askMsg{id: id, req: req, next: waitRun(id, asks, done)}
		}
	}
}

// asked shows a running command's question, or refuses it when it comes
// from a run that is no longer the current one.
func (m *Model) asked(msg askMsg) (tea.Model, tea.Cmd) {
	if msg.id != m.runID || !m.running || m.ask != nil {
		msg.req.reply <- askReply{err: errors.New("the question came after its command was cancelled")}
		return m, msg.next
	}
	if m.mode != modeCommand {
		m.leaveMode() // a history search or the key filter gives way
	}
	m.ask, m.mode = msg.req, modeAsk
	m.draft = m.input.Value() // what was typed while the command ran
	m.suggestions = nil
	m.outScroll = 0
	m.input.SetValue("")
	if msg.req.secret {
		m.input.EchoMode = textinput.EchoPassword
		m.input.EchoCharacter = '•'
	}
	if msg.req.token != "" {
		m.appendOut(m.theme.Warn.Render("waiting for you to sign the token in " + msg.req.token))
	}
	return m, msg.next
}

// askKey is a key while a command waits for an answer: Enter answers
// with the line, Esc cancels the command's question.
func (m *Model) askKey(k tea.KeyMsg) (tea.Model, tea.Cmd) {
	switch k.String() {
	case "esc":
		err := errAskCancelled
		if m.ask.token != "" {
			err = errSignCancelled
		}
		m.ask.reply <- askReply{err: err}
		m.endAsk()
		return m, nil
	case "enter":
		text := m.input.Value()
		m.ask.reply <- askReply{text: text}
		if m.ask.token != "" {
			where := "the same file"
			if strings.TrimSpace(text) != "" {
				where = strings.TrimSpace(text)
			}
			m.appendOut(m.theme.Dim.Render("signed token: " + where))
		}
		m.endAsk()
		return m, nil
	}
	var cmd tea.Cmd
	m.input, cmd = m.input.Update(k)
	return m, cmd
}

// endAsk leaves the question: the line typed before it comes back.
func (m *Model) endAsk() {
	m.ask, m.mode = nil, modeCommand
	m.input.EchoMode = textinput.EchoNormal
	m.input.SetValue(m.draft)
	m.input.CursorEnd()
	m.draft = ""
}

// askPrompt is the input line's prompt during a question.
func (m *Model) askPrompt() string {
	if m.ask.token != "" {
		return "signed token file (Enter: the same) > "
	}
	return m.ask.prompt
}

// signing is whether a token waits to be signed: its pane shows.
func (m *Model) signing() bool { return m.ask != nil && m.ask.token != "" }

// topHeight is the height of the pane above the output: the token to
// sign while one waits, else a demo's narration. The token's pane takes
// what it needs, leaving the output a line or two: while the command
// waits, what to do is what matters.
func (m *Model) topHeight(w, bodyH int) int {
	if m.signing() {
		return min(len(m.signLines(w-2))+2, max(bodyH-5, min(bodyH, 3)))
	}
	return m.demoHeight(w, bodyH)
}

func (m *Model) topBox(w, h int) string {
	if m.signing() {
		return m.signBox(w, h)
	}
	return m.narrationBox(w, h)
}

// signLines is the signing pane's text at width w: where the token is,
// the commands that sign it with openssl (as the README gives them, the
// file in $T so that they read the same whatever its path), and what
// Enter and Esc do. Commands wrap at spaces with the rest indented.
func (m *Model) signLines(w int) []string {
	wrap := func(s, indent string) []string {
		// At spaces only, as the output wraps (not after "-" of -out).
		s = strings.ReplaceAll(s, "-", nbHyphen)
		s = strings.ReplaceAll(ansi.Wrap(s, max(w-len(indent), 10), ""), nbHyphen, "-")
		lines := strings.Split(s, "\n")
		for i := 1; i < len(lines); i++ {
			lines[i] = indent + lines[i]
		}
		return lines
	}
	out := wrap("hsmsh wrote the HSM's token to the file T below. Sign it with your MFA private key (KEY.pem here), in another terminal:", "")
	for _, c := range []string{
		"T=" + commands.Quote(m.ask.token),
		`jq -r '.tokens[0].unsigned' "$T" | base64 -d > tok.bin`,
		"openssl pkeyutl -sign -inkey KEY.pem -pkeyopt digest:sha256 -in tok.bin -out sig.bin",
		`jq --arg s "$(base64 -w0 sig.bin)" '.tokens[0].signed = $s' "$T" > s.json && mv s.json "$T"`,
	} {
		for _, l := range wrap(c, "    ") {
			out = append(out, m.theme.Input.Render("  "+l))
		}
	}
	return append(out, m.theme.Prompt.Render(trunc("Press Enter when signed (or type the signed file's path); Esc to cancel.", w)))
}

// signBox draws the signing pane; when it is cut short, the line saying
// what Enter and Esc do stays.
func (m *Model) signBox(w, h int) string {
	lines := m.signLines(w - 2)
	if inner := h - 2; len(lines) > inner && inner >= 1 {
		last := lines[len(lines)-1]
		lines = append(lines[:inner-1:inner-1], last)
	}
	return m.box(fmt.Sprintf("MFA · sign the token (%s)", filepath.Base(m.ask.token)), lines, w, h)
}
