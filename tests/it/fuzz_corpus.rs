//! The fuzz targets' bodies run over their committed corpus (`fuzz/corpus/*`) as ordinary tests.

#[path = "../../fuzz/src/lib.rs"]
mod fuzz_bodies;

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect();
    out.sort();
    assert!(!out.is_empty(), "{} holds a corpus", dir.display());
    out
}

#[test]
fn fuzz_corpus_config_parse() {
    for (name, data) in corpus("config_parse") {
        println!("config_parse: {name}");
        fuzz_bodies::config_parse(&data);
    }
}

#[test]
fn fuzz_corpus_api_page() {
    for (name, data) in corpus("api_page") {
        println!("api_page: {name}");
        fuzz_bodies::api_page(&data);
    }
}
