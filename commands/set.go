package commands

// Default returns the tree of every hsmsh command.
func Default() *Tree {
	t := &Tree{}
	for _, group := range [][]*Command{clusterCommands(), replicateCommands(), userCommands(), keyCommands(), wrapCommands(), mfaCommands(), mtlsCommands(), cryptoCommands(), quorumCommands(), configCommands(), labCommands()} {
		takesApproval(group)
		for _, c := range group {
			t.add(c)
		}
	}
	secretsOnce.Do(func() { secrets = t.SecretFlags() })
	return t
}
