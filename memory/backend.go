package memory

import "github.com/sessionbridge/sessionbridge"

// New returns the backend of a node that keeps everything in this process: a
// Store and a KeyStore that publish on one Bus, and Tickets. Its NodeID is
// empty (the Manager chooses one); set it before handing the backend to
// sessionbridge.NewManager to name the node.
func New() sessionbridge.Backend {
	bus := NewBus()
	return sessionbridge.Backend{
		Store:   NewStore(bus),
		Bus:     bus,
		Tickets: NewTickets(),
		Keys:    NewKeyStore(bus),
	}
}
