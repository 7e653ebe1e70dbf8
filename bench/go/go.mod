module shoal.dev/shoal/bench/go

go 1.19

require shoal.dev/shoal v0.0.0

// the module beside this one in the tree: builds offline, no proxy
replace shoal.dev/shoal => ../../libclient/go
