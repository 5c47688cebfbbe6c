export declare const EXTERNAL_PACKAGES: string[];
export declare function bundle(options: { entryPoints: string[]; outdir: string; outbase?: string }): Promise<void>;
