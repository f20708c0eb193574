module switchboard/benches/mockupstream

go 1.26
