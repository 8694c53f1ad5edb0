module github.com/hsmsh/hsmsh/bench/softhsm

go 1.26.0

require github.com/miekg/pkcs11 v1.1.2
