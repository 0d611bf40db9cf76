package mgmt

// newRegistry builds the command table.
func newRegistry() *registry {
	r := &registry{}
	for _, g := range []*group{arrayGroup(), volGroup(), hostGroup(), hgroupGroup(), portGroup(), driveGroup(), alertGroup(), messageGroup(), adminGroup(), certGroup(), kmipGroup()} {
		r.add(g)
	}
	return r
}
