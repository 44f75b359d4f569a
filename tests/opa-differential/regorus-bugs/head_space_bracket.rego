package repro

s [x] {
  x := 1
}

test_head_space_bracket { s == {1} }
