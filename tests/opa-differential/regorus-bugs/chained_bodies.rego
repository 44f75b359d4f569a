package repro

s[x] {
  x := 1
} {
  x := 2
}

test_s { s == {1, 2} }
