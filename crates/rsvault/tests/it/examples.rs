//! Example replay (issue 4, item 2).
