package mgmt

// Phone home: purearray enable|disable phonehome, purearray list
// --phonehome, purearray setattr --phonehome-*, purearray phonehome.
func phonehomeFeatures() []arrayFeature { return nil }
