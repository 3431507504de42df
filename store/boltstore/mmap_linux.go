package boltstore

import "syscall"

// mmapFlags makes the kernel read the whole file when it is mapped: the
// index is rebuilt by walking every message page at Open.
const mmapFlags = syscall.MAP_POPULATE
