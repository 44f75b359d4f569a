package repro

p {
    input.x
    (1 + 1) == 2
}

test_p { p with input as {"x": true} }
