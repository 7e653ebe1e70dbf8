module shoal.dev/shoal

go 1.19
