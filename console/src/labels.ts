// Words and colours the three roles share.

export const NOTICE_TYPES: [string, string][] = [
  ["missing_person", "Missing person"],
  ["kidnapping_confinement", "Kidnapping / confinement"],
  ["wanted_person", "Wanted person"],
  ["scam_compound", "Scam compound"],
  ["victim_rescue_request", "Rescue request"],
  ["death_report", "Death report"],
  ["intel_report", "Intelligence report"],
  ["reply", "Reply"],
];

export const PRIORITIES: [string, string][] = [
  ["flash", "Flash (minutes)"],
  ["immediate", "Immediate (hours)"],
  ["routine", "Routine (days)"],
];

// TLP 2.0: the label and who may see it, shown in its own colour on every notice.
export const TLP: [string, string][] = [
  ["clear", "TLP:CLEAR – no limit"],
  ["green", "TLP:GREEN – the community"],
  ["amber", "TLP:AMBER – recipients' organisations"],
  ["amber+strict", "TLP:AMBER+STRICT – recipients' organisations only"],
  ["red", "TLP:RED – named recipients only"],
];

export const INTERPOL_COLOURS: [string, string][] = [
  ["", "None"],
  ["red", "Red – wanted for prosecution"],
  ["yellow", "Yellow – missing person"],
  ["blue", "Blue – information on a person"],
  ["black", "Black – unidentified body"],
  ["green", "Green – warning"],
  ["orange", "Orange – imminent threat"],
  ["purple", "Purple – modus operandi"],
];

export const STATES = ["accepted", "delivered", "fetched", "acknowledged", "replied", "recalled", "expired"] as const;

export function label(table: [string, string][], value: string): string {
  return table.find(([v]) => v === value)?.[1] ?? value;
}

export function tlpClass(tlp: string): string {
  return `tlp tlp-${tlp.replace("+", "-")}`;
}

export function tlpText(tlp: string): string {
  return `TLP:${tlp.toUpperCase()}`;
}
