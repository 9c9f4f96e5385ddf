package memory_test

import (
	"testing"

	"github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/memory"
	"github.com/sessionbridge/sessionbridge/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) (sessionbridge.Store, sessionbridge.Bus) {
		bus := memory.NewBus()
		return memory.NewStore(bus), bus
	})
}

func TestKeyStoreConformance(t *testing.T) {
	storetest.RunKeys(t, func(t *testing.T) (sessionbridge.KeyStore, sessionbridge.Bus) {
		bus := memory.NewBus()
		return memory.NewKeyStore(bus), bus
	})
}
