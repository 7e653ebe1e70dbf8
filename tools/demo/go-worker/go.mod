module shoal.dev/demo/goworker

go 1.19

require shoal.dev/shoal v0.0.0

replace shoal.dev/shoal => ../../../libclient/go
