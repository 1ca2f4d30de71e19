//! pidwatch end-to-end tests.
