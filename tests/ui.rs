//! Compile errors of the macros, and what must compile.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/cache_aside/*.rs");
    cases.compile_fail("tests/ui/write_through/*.rs");
    cases.compile_fail("tests/ui/invalidates/*.rs");
    cases.compile_fail("tests/ui/cache_batch/*.rs");
    cases.pass("tests/ui/pass/*.rs");
    // Every format option: with their features on (`scripts/test` runs
    // with all of them).
    #[cfg(all(
        feature = "postcard",
        feature = "msgpack",
        feature = "lz4",
        feature = "zstd",
        feature = "encryption"
    ))]
    cases.pass("tests/ui/pass-formats/*.rs");
}
