//! Big letters for the pin-bridging screen: a hand-drawn 5×5 block font (A–Z, 0–9, space and a
//! few marks), so "RELEASE NOW" reads from across a bench. Words wrap to the width; when the
//! text does not fit even wrapped, [`layout`] says so and the caller writes it plainly.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::Style;

/// Rows of one glyph.
pub const GLYPH_HEIGHT: u16 = 5;
/// Columns of one glyph (plus one column of space between glyphs).
pub const GLYPH_WIDTH: u16 = 5;

fn glyph(c: char) -> Option<[&'static str; 5]> {
    Some(match c.to_ascii_uppercase() {
        'A' => [" ### ", "#   #", "#####", "#   #", "#   #"],
        'B' => ["#### ", "#   #", "#### ", "#   #", "#### "],
        'C' => [" ####", "#    ", "#    ", "#    ", " ####"],
        'D' => ["#### ", "#   #", "#   #", "#   #", "#### "],
        'E' => ["#####", "#    ", "#### ", "#    ", "#####"],
        'F' => ["#####", "#    ", "#### ", "#    ", "#    "],
        'G' => [" ####", "#    ", "#  ##", "#   #", " ####"],
        'H' => ["#   #", "#   #", "#####", "#   #", "#   #"],
        'I' => ["#####", "  #  ", "  #  ", "  #  ", "#####"],
        'J' => ["#####", "   # ", "   # ", "#  # ", " ##  "],
        'K' => ["#   #", "#  # ", "###  ", "#  # ", "#   #"],
        'L' => ["#    ", "#    ", "#    ", "#    ", "#####"],
        'M' => ["#   #", "## ##", "# # #", "#   #", "#   #"],
        'N' => ["#   #", "##  #", "# # #", "#  ##", "#   #"],
        'O' => [" ### ", "#   #", "#   #", "#   #", " ### "],
        'P' => ["#### ", "#   #", "#### ", "#    ", "#    "],
        'Q' => [" ### ", "#   #", "# # #", "#  # ", " ## #"],
        'R' => ["#### ", "#   #", "#### ", "#  # ", "#   #"],
        'S' => [" ####", "#    ", " ### ", "    #", "#### "],
        'T' => ["#####", "  #  ", "  #  ", "  #  ", "  #  "],
        'U' => ["#   #", "#   #", "#   #", "#   #", " ### "],
        'V' => ["#   #", "#   #", "#   #", " # # ", "  #  "],
        'W' => ["#   #", "#   #", "# # #", "## ##", "#   #"],
        'X' => ["#   #", " # # ", "  #  ", " # # ", "#   #"],
        'Y' => ["#   #", " # # ", "  #  ", "  #  ", "  #  "],
        'Z' => ["#####", "   # ", "  #  ", " #   ", "#####"],
        '0' => [" ### ", "#  ##", "# # #", "##  #", " ### "],
        '1' => ["  #  ", " ##  ", "  #  ", "  #  ", " ### "],
        '2' => [" ### ", "#   #", "  ## ", " #   ", "#####"],
        '3' => ["#### ", "    #", " ### ", "    #", "#### "],
        '4' => ["#   #", "#   #", "#####", "    #", "    #"],
        '5' => ["#####", "#    ", "#### ", "    #", "#### "],
        '6' => [" ### ", "#    ", "#### ", "#   #", " ### "],
        '7' => ["#####", "   # ", "  #  ", " #   ", " #   "],
        '8' => [" ### ", "#   #", " ### ", "#   #", " ### "],
        '9' => [" ### ", "#   #", " ####", "    #", " ### "],
        ' ' => ["     ", "     ", "     ", "     ", "     "],
        '-' => ["     ", "     ", "#####", "     ", "     "],
        '!' => ["  #  ", "  #  ", "  #  ", "     ", "  #  "],
        '.' => ["     ", "     ", "     ", "     ", "  #  "],
        _ => return None,
    })
}

/// How much each glyph pixel is blown up: `x` columns by `y` rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scale {
    pub x: u16,
    pub y: u16,
}

impl Scale {
    pub const ONE: Scale = Scale { x: 1, y: 1 };
}

/// Columns a line of `n` glyphs takes (one pixel column of space between glyphs).
pub fn line_width(n: usize, s: Scale) -> u16 {
    if n == 0 {
        0
    } else {
        (n as u16)
            .saturating_mul((GLYPH_WIDTH + 1).saturating_mul(s.x))
            .saturating_sub(s.x)
    }
}

/// Wrap `text` into lines of big glyphs that fit `width` columns. `None` when a single word is
/// wider than `width` or a character has no glyph.
pub fn layout(text: &str, width: u16, s: Scale) -> Option<Vec<String>> {
    if text.chars().any(|c| glyph(c).is_none()) {
        return None;
    }
    let mut lines: Vec<String> = Vec::new();
    for word in text.split_whitespace() {
        if line_width(word.chars().count(), s) > width {
            return None;
        }
        match lines.last_mut() {
            Some(last)
                if line_width(last.chars().count() + 1 + word.chars().count(), s) <= width =>
            {
                last.push(' ');
                last.push_str(word);
            }
            _ => lines.push(word.to_string()),
        }
    }
    Some(lines)
}

/// Rows needed for `lines` big lines (one pixel row of space between them).
pub fn height(lines: usize, s: Scale) -> u16 {
    if lines == 0 {
        0
    } else {
        let n = lines as u16;
        (n * GLYPH_HEIGHT + (n - 1)).saturating_mul(s.y)
    }
}

/// Draw the lines centred in `area` (clipped to it), filled cells with `style` and `█`.
pub fn render(lines: &[String], area: Rect, s: Scale, style: Style, buf: &mut Buffer) {
    let area = area.intersection(buf.area);
    let (sx, sy) = (s.x.max(1) as u32, s.y.max(1) as u32);
    for (li, line) in lines.iter().enumerate() {
        let top = area.y as u32 + li as u32 * (GLYPH_HEIGHT as u32 + 1) * sy;
        let w = line_width(line.chars().count(), s);
        let left = area.x as u32 + (area.width.saturating_sub(w) / 2) as u32;
        for (ci, c) in line.chars().enumerate() {
            let Some(rows) = glyph(c) else { continue };
            let gx = left + ci as u32 * (GLYPH_WIDTH as u32 + 1) * sx;
            for (ry, row) in rows.iter().enumerate() {
                for (rx, px) in row.bytes().enumerate() {
                    if px != b'#' {
                        continue;
                    }
                    for dy in 0..sy {
                        let y = top + ry as u32 * sy + dy;
                        if y >= area.bottom() as u32 {
                            continue;
                        }
                        for dx in 0..sx {
                            let x = gx + rx as u32 * sx + dx;
                            if x >= area.right() as u32 {
                                continue;
                            }
                            if let Some(cell) = buf.cell_mut((x as u16, y as u16)) {
                                cell.set_symbol("█");
                                cell.set_style(style);
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_glyph_is_five_by_five() {
        for c in ('A'..='Z').chain('0'..='9').chain([' ', '-', '!', '.']) {
            let g = glyph(c).unwrap();
            assert!(g.iter().all(|r| r.len() == 5), "{c}");
        }
        assert!(glyph('é').is_none());
    }

    #[test]
    fn words_wrap_to_the_width() {
        let one = Scale::ONE;
        assert_eq!(layout("RELEASE NOW", 80, one).unwrap(), vec!["RELEASE NOW"]);
        assert_eq!(
            layout("PROGRAMMER UPLOADED", 78, one).unwrap(),
            vec!["PROGRAMMER", "UPLOADED"]
        );
        assert!(layout("PROGRAMMER", 20, one).is_none());
        assert!(layout("9008 SEEN — NOW", 200, one).is_none());
        assert_eq!(line_width(11, one), 65);
        assert_eq!(height(2, one), 11);
        let two = Scale { x: 2, y: 2 };
        assert_eq!(line_width(11, two), 130);
        assert_eq!(height(2, two), 22);
        assert!(layout("RELEASE NOW", 129, two).unwrap().len() == 2);
    }

    #[test]
    fn render_clips_to_the_buffer() {
        let mut buf = Buffer::empty(Rect::new(0, 0, 7, 3));
        render(
            &["WAIT".to_string()],
            Rect::new(0, 0, 40, 10),
            Scale::ONE,
            Style::new(),
            &mut buf,
        );
        assert_eq!(buf[(0, 0)].symbol(), "█");
        let mut buf = Buffer::empty(Rect::new(0, 0, 60, 12));
        render(
            &["I".to_string()],
            Rect::new(0, 0, 10, 12),
            Scale { x: 2, y: 2 },
            Style::new(),
            &mut buf,
        );
        // The top bar of the I is 10 columns by 2 rows.
        assert!((0..10).all(|x| buf[(x, 0)].symbol() == "█" && buf[(x, 1)].symbol() == "█"));
        assert_eq!(buf[(0, 2)].symbol(), " ");
    }
}
