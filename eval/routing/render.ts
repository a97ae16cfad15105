/**
 * vega-lite spec -> SVG (vega's headless renderer) -> PNG (resvg). Everything runs offline: resvg
 * draws text with the system's fonts, so the PNG is only readable if one is installed.
 */
import { Resvg, type ResvgRenderOptions } from '@resvg/resvg-js';
import { parse, View } from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';

export async function toSvg(spec: TopLevelSpec): Promise<string> {
  const view = new View(parse(compile(spec).spec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

// The SVG names the generic "sans-serif"; map it to a font that is commonly installed
// (fonts-dejavu-core) and fall back to whatever resvg finds first.
const FONT_OPTIONS: ResvgRenderOptions['font'] = {
  loadSystemFonts: true,
  sansSerifFamily: 'DejaVu Sans',
  defaultFontFamily: 'DejaVu Sans',
};

export function toPng(svg: string, zoom: number): Buffer {
  return new Resvg(svg, { font: FONT_OPTIONS, background: 'white', fitTo: { mode: 'zoom', value: zoom } })
    .render()
    .asPng();
}

/**
 * resvg silently drops text when it finds no font, which would leave a figure without title,
 * axes or legend. Render a word on a transparent canvas and see whether any pixel was inked.
 */
export function textRenders(): boolean {
  const probe =
    '<svg xmlns="http://www.w3.org/2000/svg" width="120" height="40">' +
    '<text x="4" y="30" font-family="sans-serif" font-size="24">Axis</text></svg>';
  const pixels = new Resvg(probe, { font: FONT_OPTIONS }).render().pixels;
  for (let i = 3; i < pixels.length; i += 4) if (pixels[i] !== 0) return true;
  return false;
}
