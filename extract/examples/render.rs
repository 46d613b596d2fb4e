//! Render one PDF page to a grey PNG with the engine's renderer:
//! `cargo run -p paperhook-extract --example render -- IN.pdf PAGE DPI OUT.png`.

use paperhook_extract::{Options, render_page};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, input, page, dpi, out] = args.as_slice() else {
        return Err("usage: render IN.pdf PAGE DPI OUT.png".into());
    };
    let img = render_page(
        &std::fs::read(input)?,
        page.parse()?,
        dpi.parse()?,
        &Options::default(),
    )?;
    img.save(out)?;
    Ok(())
}
