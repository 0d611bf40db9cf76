package mgmt

// The security token (Rapid Data Locking): purearray enable|disable|test
// security-token, purearray list --security-token, purecert, purekmip.
func tokenFeatures() []arrayFeature { return nil }
