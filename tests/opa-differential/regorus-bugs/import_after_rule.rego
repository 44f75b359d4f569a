package repro

x := 1

import data.repro.x as y

test_import_after_rule if y == 1
