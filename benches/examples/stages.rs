//! Time each stage of the CLI path on one input file: parse, decode, validate, lower, optimize, render.
use std::time::Instant;

fn main() {
    let path = std::env::args().nth(1).expect("usage: stages FILE");
    let t = Instant::now();
    let src = nfcompile::front::Source::read(std::path::Path::new(&path)).unwrap();
    let read = t.elapsed();
    let t = Instant::now();
    let docs = nfcompile::front::documents(std::slice::from_ref(&src)).unwrap();
    let parse = t.elapsed();
    drop(docs);
    let t = Instant::now();
    let (cluster, _) = nfcompile::front::load(&[src], None).unwrap();
    let load = t.elapsed();
    let t = Instant::now();
    let v = nfcompile::validate::validate(&cluster).unwrap();
    let validate = t.elapsed();
    let t = Instant::now();
    let mut rs = nfcompile::lower::lower(v);
    let lower = t.elapsed();
    let t = Instant::now();
    nfcompile::optimize::run(&mut rs);
    let optimize = t.elapsed();
    let t = Instant::now();
    let text = nfcompile::emit::text::write_string(&rs);
    let render = t.elapsed();
    println!("read {read:?} parse {parse:?} load(parse+decode) {load:?} validate {validate:?} lower {lower:?} optimize {optimize:?} render {render:?} ({} bytes)", text.len());
}
