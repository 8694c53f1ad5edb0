package commands

// Default returns the tree of every hsmsh command.
func Default() *Tree {
	t := &Tree{}
	for _, group := range [][]*Command{clusterCommands(), userCommands(), keyCommands(), cryptoCommands(), configCommands(), labCommands()} {
		for _, c := range group {
			t.add(c)
		}
	}
	return t
}
