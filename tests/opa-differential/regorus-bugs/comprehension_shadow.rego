package repro

first(xs) := x if {
	x := [x | some x in xs; x > 1][0]
}

test_comprehension_shadow if first([1, 2, 3]) == 2
