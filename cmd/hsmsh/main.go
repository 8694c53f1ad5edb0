// Command hsmsh is an HSM administration shell in the style of AWS
// CloudHSM CLI. All behaviour lives in the shell package.
package main

import (
	"os"

	"github.com/hsmsh/hsmsh/shell"
)

func main() {
	os.Exit(shell.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
